"""The topic filters the bridge subscribes to (the topics themselves: protocol.topics).

Device topics follow docs/protocol.md; the server topics (assignments to a courier, an order's
status events, alerts) are published by the API from its outbox after a change committed.
"""

from __future__ import annotations

from typing import Final, Literal

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


class Topics:
    """Builds filters and parses incoming topics under one configurable prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

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

    def always(self) -> tuple[str, ...]:
        """Alerts, for every admin socket whatever it subscribed to. A phone's own
        emergency topic is not among them: the API turns it into an alert, which carries
        the alert's id, and that is what admins get."""
        return (f"{self.prefix}/alerts/+",)

    def assignments(self, courier_id: str) -> str:
        return f"{self.prefix}/couriers/{courier_id}/assignments"

    def courier(self, courier_id: str, leaf: str) -> str:
        return f"{self.prefix}/couriers/{courier_id}/{leaf}"
