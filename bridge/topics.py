"""The MQTT topics the bridge reads, and the filters it subscribes to.

Device topics follow docs/protocol.md; the two server topics (assignments to a courier, and an
order's status events) are published by the API after it has applied a change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# What a topic carries, as far as the bridge cares.
TopicKind = Literal[
    "courier_location",
    "vehicle_location",
    "owntracks",
    "presence",
    "emergency",
    "assignments",
    "order_status",
]

# Subscription families. One refcounted key is (family, id); id None is the family's wildcard,
# which covers every specific filter of the family.
Family = Literal["location", "vehicle_location", "presence", "assignments", "status"]
FAMILIES: Final[tuple[Family, ...]] = (
    "location",
    "vehicle_location",
    "presence",
    "assignments",
    "status",
)


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    kind: TopicKind
    # The courier, vehicle or order the message is about.
    id: str


class Topics:
    """Builds filters and parses incoming topics under one configurable prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._depth = prefix.count("/") + 1

    def filters(self, family: Family, entity_id: str | None) -> tuple[str, ...]:
        p = self.prefix
        one = "+" if entity_id is None else entity_id
        match family:
            case "location":
                return (f"{p}/couriers/{one}/location", f"owntracks/{one}/+")
            case "vehicle_location":
                return (f"{p}/vehicles/{one}/location",)
            case "presence":
                return (f"{p}/couriers/{one}/presence",)
            case "assignments":
                return (f"{p}/couriers/{one}/assignments",)
            case "status":
                return (f"{p}/orders/{one}/status",)

    def emergency_filter(self) -> str:
        return f"{self.prefix}/couriers/+/emergency"

    def order_status(self, order_id: str) -> str:
        return f"{self.prefix}/orders/{order_id}/status"

    def assignments(self, courier_id: str) -> str:
        return f"{self.prefix}/couriers/{courier_id}/assignments"

    def courier(self, courier_id: str, leaf: str) -> str:
        return f"{self.prefix}/couriers/{courier_id}/{leaf}"

    def parse(self, topic: str) -> ParsedTopic | None:
        """The kind and id of a topic, or None for anything outside the scheme."""
        parts = topic.split("/")
        if parts[0] == "owntracks" and self.prefix != "owntracks":
            if len(parts) == 3 and ID_PATTERN.match(parts[1]):
                return ParsedTopic("owntracks", parts[1])
            return None
        if "/".join(parts[: self._depth]) != self.prefix:
            return None
        rest = parts[self._depth :]
        if len(rest) != 3 or not ID_PATTERN.match(rest[1]):
            return None
        collection, entity_id, leaf = rest
        kind: TopicKind | None = None
        if collection == "couriers":
            kind = _COURIER_LEAVES.get(leaf)
        elif collection == "vehicles" and leaf == "location":
            kind = "vehicle_location"
        elif collection == "orders" and leaf == "status":
            kind = "order_status"
        return None if kind is None else ParsedTopic(kind, entity_id)


_COURIER_LEAVES: Final[dict[str, TopicKind]] = {
    "location": "courier_location",
    "presence": "presence",
    "emergency": "emergency",
    "assignments": "assignments",
}
