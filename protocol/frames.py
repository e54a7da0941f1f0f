"""The frames the bridge sends to browsers over its WebSocket (docs/websocket.md), as msgspec
structs built straight from the protocol's own types: a validated :class:`~protocol.payloads.Fix`
or a stored last position becomes a :class:`Location`, a server message (protocol.server_topics)
its `status`, `assignment` or `emergency` frame.

Every frame is a JSON object with a `type` and `sent`, the server time (epoch seconds, ms
precision) at which it was relayed: :func:`encode_frame` stamps it and encodes the frame once,
whatever the number of sockets it goes to. Times are epoch seconds, except an order's `eta`,
which stays ISO 8601 as the API published it; a field without a value is null.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Final, Literal, Protocol

import msgspec
from msgspec import UNSET, UnsetType

from protocol.payloads import PresenceState
from protocol.server_topics import AlertMessage, AssignmentMessage, OrderStatusMessage
from protocol.statuses import Status
from protocol.topics import SourceKind

__all__ = [
    "AssignmentFrame",
    "AuthOkFrame",
    "EmergencyFrame",
    "ErrorFrame",
    "EventFrame",
    "Frame",
    "Location",
    "LocationFrame",
    "LocationsFrame",
    "OrderSummary",
    "PongFrame",
    "PresenceFrame",
    "ReauthRequiredFrame",
    "SnapshotFrame",
    "StatusFrame",
    "SubscribedFrame",
    "UnsubscribedFrame",
    "assignment_frame",
    "emergency_frame",
    "encode_frame",
    "location",
    "location_frame",
    "now",
    "status_frame",
]

_encoder: Final = msgspec.json.Encoder()


def now() -> float:
    """The `sent` of a frame: epoch seconds, ms precision."""
    return round(time.time(), 3)


class Frame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """A frame of its own `type`; `sent` is set by :func:`encode_frame` (unset: left out)."""

    sent: float | UnsetType = UNSET


# --- positions ----------------------------------------------------------------------------
class PositionSource(Protocol):
    """A fix by the names protocol.payloads.Fix and store.positions.LastPosition share."""

    @property
    def source_kind(self) -> SourceKind: ...
    @property
    def source_id(self) -> str: ...
    @property
    def fix_time(self) -> datetime: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def speed(self) -> float | None: ...
    @property
    def heading(self) -> float | None: ...


class Location(msgspec.Struct, frozen=True, gc=False):
    """A source's position as browsers see it: an item of `locations` and of a snapshot's
    `locations`, and the body of a `location` frame. `speed` m/s, `heading` degrees."""

    kind: SourceKind
    id: str
    lat: float
    lon: float
    ts: float
    speed: float | None
    heading: float | None

    @property
    def key(self) -> str:
        """`kind:id`, one per source."""
        return f"{self.kind}:{self.id}"


def location(fix: PositionSource) -> Location:
    """A validated fix (protocol.payloads.Fix) or a stored newest one, as browsers see it."""
    return Location(
        fix.source_kind,
        fix.source_id,
        fix.lat,
        fix.lon,
        fix.fix_time.timestamp(),
        fix.speed,
        fix.heading,
    )


class LocationFrame(Location, frozen=True, kw_only=True, tag_field="type", tag="location"):
    """One courier's position, to the sockets that follow the courier."""

    sent: float | UnsetType = UNSET


def location_frame(position: Location) -> LocationFrame:
    return LocationFrame(*msgspec.structs.astuple(position))


class LocationsFrame(Frame, frozen=True, tag="locations"):
    """The admin firehose: the newest position of each source since the last batch."""

    items: list[Location]


# --- orders -------------------------------------------------------------------------------
class OrderSummary(msgspec.Struct, frozen=True):
    """An order's state as browsers see it: a snapshot's `orders` item and the body of a
    `status` frame. `version` is the order's version after the change; null from an API
    that sends none."""

    order: str
    status: Status
    courier_id: str | None
    eta: str | None
    ts: float
    version: int | None


class StatusFrame(OrderSummary, frozen=True, kw_only=True, tag_field="type", tag="status"):
    """An order's status or ETA changed (from `{prefix}/orders/{id}/status`)."""

    sent: float | UnsetType = UNSET


def status_frame(message: OrderStatusMessage) -> StatusFrame:
    return StatusFrame(
        message.order_id,
        message.status,
        message.courier_id,
        None if message.eta is None else message.eta.isoformat(),
        message.ts.timestamp(),
        message.version or None,
    )


class AssignmentFrame(Frame, frozen=True, tag="assignment"):
    """An order given to (`assigned`) or taken from (`unassigned`) a courier."""

    courier_id: str
    order: str
    action: Literal["assigned", "unassigned"]
    ts: float
    version: int | None


def assignment_frame(message: AssignmentMessage) -> AssignmentFrame:
    return AssignmentFrame(
        courier_id=message.courier_id,
        order=message.order_id,
        action="assigned" if message.type == "assignment" else "unassigned",
        ts=message.ts.timestamp(),
        version=message.version or None,
    )


class EmergencyFrame(Frame, frozen=True, tag="emergency"):
    """An alert the API stored (`raised`) or an admin acknowledged; `ts` is when it was
    raised."""

    state: Literal["raised", "acknowledged"]
    alert_id: int
    courier_id: str
    lat: float | None
    lon: float | None
    ts: float
    message: str
    acknowledged_by: str | None
    acknowledged_at: float | None


def emergency_frame(message: AlertMessage) -> EmergencyFrame:
    acknowledged_at = message.acknowledged_at
    return EmergencyFrame(
        state="raised" if message.type == "alert_raised" else "acknowledged",
        alert_id=message.alert_id,
        courier_id=message.courier_id,
        lat=message.lat,
        lon=message.lon,
        ts=message.raised_at.timestamp(),
        message=message.message,
        acknowledged_by=message.acknowledged_by,
        acknowledged_at=None if acknowledged_at is None else acknowledged_at.timestamp(),
    )


class PresenceFrame(Frame, frozen=True, tag="presence"):
    """A courier's availability (store.presence); also a snapshot's `presence` item."""

    id: str
    state: PresenceState
    ts: float | None


#: The frames relayed as they happen, never dropped (unlike positions).
EventFrame = StatusFrame | AssignmentFrame | EmergencyFrame | PresenceFrame


# --- the session --------------------------------------------------------------------------
class AuthOkFrame(Frame, frozen=True, tag="auth_ok"):
    uid: str
    role: str
    courier_id: str | None
    restaurant_id: str | None
    expires_at: float


class ReauthRequiredFrame(Frame, frozen=True, tag="reauth_required"):
    grace_s: float


class SubscribedFrame(Frame, frozen=True, tag="subscribed"):
    channel: str


class UnsubscribedFrame(Frame, frozen=True, tag="unsubscribed"):
    channel: str


class SnapshotFrame(Frame, frozen=True, tag="snapshot"):
    """What a page needs to draw a channel at once, before its live events."""

    channel: str
    orders: list[OrderSummary]
    locations: list[Location]
    presence: list[PresenceFrame]


class ErrorFrame(Frame, frozen=True, tag="error"):
    """`channel` echoes the frame's channel as it came (any JSON value); `reason` details
    `auth_failed`."""

    code: str
    message: str
    channel: Any = UNSET
    reason: str | UnsetType = UNSET


class PongFrame(Frame, frozen=True, tag="pong"):
    """`id` echoes the ping's `id`, whatever JSON value it was."""

    id: Any


def encode_frame(frame: Frame | LocationFrame | StatusFrame) -> str:
    """The frame's JSON text, stamped with `sent` now."""
    return _encoder.encode(msgspec.structs.replace(frame, sent=now())).decode()
