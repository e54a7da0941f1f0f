"""MQTT topics of the wire contract: parse any topic we own, build every topic we publish.

Device topics live under a configurable prefix (default ``fleet``); OwnTracks phones use the
app's own ``owntracks/{user}/{device}`` tree. Server topics (assignments, order status,
alerts) share the prefix so one ``{prefix}/#`` subscription sees the whole fleet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

DEFAULT_PREFIX = "fleet"
OWNTRACKS_ROOT = "owntracks"
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")

SourceKind = Literal["courier", "vehicle"]


class TopicKind(StrEnum):
    """What a topic carries. Device topics first, then the topics the servers publish."""

    COURIER_LOCATION = "courier_location"
    VEHICLE_LOCATION = "vehicle_location"
    PRESENCE = "presence"
    EMERGENCY = "emergency"
    DELIVERY_STATUS = "delivery_status"
    OWNTRACKS = "owntracks"
    OWNTRACKS_EVENT = "owntracks_event"
    # Published by the servers, never by devices.
    ASSIGNMENTS = "assignments"
    ORDER_STATUS = "order_status"
    ALERTS = "alerts"


DEVICE_TOPIC_KINDS = frozenset(
    {
        TopicKind.COURIER_LOCATION,
        TopicKind.VEHICLE_LOCATION,
        TopicKind.PRESENCE,
        TopicKind.EMERGENCY,
        TopicKind.DELIVERY_STATUS,
        TopicKind.OWNTRACKS,
        TopicKind.OWNTRACKS_EVENT,
    }
)


class TopicError(ValueError):
    """A topic outside the scheme, or an id in it with forbidden characters.

    ``code`` is ``"bad_topic"`` or ``"bad_id"``; the message says which level is wrong."""

    def __init__(self, code: Literal["bad_topic", "bad_id"], message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic.

    ``entity_id`` is the courier, vehicle or order the topic belongs to (for OwnTracks the
    ``user`` level, which is the courier id). ``order_id`` is set for delivery status
    topics, ``device`` for OwnTracks topics."""

    kind: TopicKind
    entity_id: str
    order_id: str | None = None
    device: str | None = None

    @property
    def source_kind(self) -> SourceKind:
        """Whose fix or event this is: a vehicle for vehicle topics, a courier otherwise."""
        return "vehicle" if self.kind is TopicKind.VEHICLE_LOCATION else "courier"

    @property
    def from_device(self) -> bool:
        return self.kind in DEVICE_TOPIC_KINDS


def valid_id(value: str) -> bool:
    """True for 1-64 characters of ``[A-Za-z0-9_-]``, the alphabet of every id in a topic."""
    return ID_PATTERN.fullmatch(value) is not None


def _checked(value: str, what: str) -> str:
    if not valid_id(value):
        raise TopicError("bad_id", f"{what} {value!r} is not 1-64 characters of [A-Za-z0-9_-]")
    return value


# (second level, number of levels after the prefix, last level) -> kind
_PREFIXED_SHAPES: dict[tuple[str, int, str], TopicKind] = {
    ("couriers", 3, "location"): TopicKind.COURIER_LOCATION,
    ("vehicles", 3, "location"): TopicKind.VEHICLE_LOCATION,
    ("couriers", 3, "presence"): TopicKind.PRESENCE,
    ("couriers", 3, "emergency"): TopicKind.EMERGENCY,
    ("couriers", 3, "assignments"): TopicKind.ASSIGNMENTS,
    ("couriers", 5, "status"): TopicKind.DELIVERY_STATUS,
    ("orders", 3, "status"): TopicKind.ORDER_STATUS,
    ("alerts", 2, ""): TopicKind.ALERTS,
}


def parse_topic(topic: str, *, prefix: str = DEFAULT_PREFIX) -> Topic:
    """Parse a topic of the contract; raise TopicError for anything else."""
    levels = topic.split("/")
    if levels[0] == OWNTRACKS_ROOT and prefix != OWNTRACKS_ROOT:
        return _parse_owntracks(topic, levels)
    prefix_levels = prefix.count("/") + 1
    if levels[:prefix_levels] != prefix.split("/"):
        raise TopicError("bad_topic", f"topic {topic!r} is outside {prefix}/ and owntracks/")
    rest = levels[prefix_levels:]
    if not rest:
        raise TopicError("bad_topic", f"topic {topic!r} has nothing after the prefix")
    last = rest[-1] if len(rest) > 2 else ""
    kind = _PREFIXED_SHAPES.get((rest[0], len(rest), last))
    if kind is TopicKind.DELIVERY_STATUS and rest[2] != "deliveries":
        kind = None
    if kind is None:
        raise TopicError("bad_topic", f"topic {topic!r} is not a topic of the fleet protocol")
    what = {"vehicles": "vehicle id", "orders": "order id"}.get(rest[0], "courier id")
    entity_id = _checked(rest[1], what)
    if kind is TopicKind.DELIVERY_STATUS:
        return Topic(kind, entity_id, order_id=_checked(rest[3], "order id"))
    return Topic(kind, entity_id)


def _parse_owntracks(topic: str, levels: list[str]) -> Topic:
    if len(levels) == 3:
        kind = TopicKind.OWNTRACKS
    elif len(levels) == 4 and levels[3] == "event":
        kind = TopicKind.OWNTRACKS_EVENT
    else:
        raise TopicError(
            "bad_topic",
            f"topic {topic!r} is not owntracks/{{user}}/{{device}}[/event]",
        )
    user = _checked(levels[1], "OwnTracks user (courier id)")
    device = _checked(levels[2], "OwnTracks device")
    return Topic(kind, user, device=device)


# --- building topics -------------------------------------------------------------------


def courier_location_topic(courier_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/couriers/{_checked(courier_id, 'courier id')}/location"


def vehicle_location_topic(vehicle_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/vehicles/{_checked(vehicle_id, 'vehicle id')}/location"


def presence_topic(courier_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/couriers/{_checked(courier_id, 'courier id')}/presence"


def emergency_topic(courier_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/couriers/{_checked(courier_id, 'courier id')}/emergency"


def delivery_status_topic(courier_id: str, order_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return (
        f"{prefix}/couriers/{_checked(courier_id, 'courier id')}"
        f"/deliveries/{_checked(order_id, 'order id')}/status"
    )


def owntracks_topic(user: str, device: str) -> str:
    return f"{OWNTRACKS_ROOT}/{_checked(user, 'OwnTracks user')}/{_checked(device, 'device')}"


def owntracks_event_topic(user: str, device: str) -> str:
    return f"{owntracks_topic(user, device)}/event"


def assignments_topic(courier_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """Server -> courier phone: the courier's new assignments (QoS 1)."""
    return f"{prefix}/couriers/{_checked(courier_id, 'courier id')}/assignments"


def order_status_topic(order_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """Server -> bridge: an order's status changes as the workflow applies them."""
    return f"{prefix}/orders/{_checked(order_id, 'order id')}/status"


def alerts_topic(courier_id: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """Server -> admins: an emergency alert a courier raised over REST or MQTT.

    Admins subscribe to ``{prefix}/alerts/+``."""
    return f"{prefix}/alerts/{_checked(courier_id, 'courier id')}"


# --- subscriptions ---------------------------------------------------------------------


def ingest_filters(*, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """What ingest subscribes to: the whole fleet tree and the whole OwnTracks tree.

    Wider than the device topics on purpose, so a device publishing to a misspelt topic
    ends up as a dead letter instead of vanishing. Server topics are recognised and skipped."""
    return [f"{prefix}/#", f"{OWNTRACKS_ROOT}/#"]


def shared_subscription(topic_filter: str, *, group: str) -> str:
    """The MQTT 5 shared subscription through which several workers split one stream."""
    return f"$share/{_checked(group, 'shared subscription group')}/{topic_filter}"
