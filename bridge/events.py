"""MQTT payloads turned into the events the bridge relays, and those events into frames.

Only what the browser needs is read; ingest keeps the full record and the dead letters. A
payload the bridge cannot read raises InvalidPayload and is counted, never relayed. The
server's messages (order status, assignments, alerts) are read with the protocol's own
models (protocol.server_topics), after the raw bounds of protocol.json_limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from protocol.payloads import Fix as ProtocolFix
from protocol.payloads import PresenceEvent
from protocol.server_topics import (
    InvalidServerMessage,
    decode_alert,
    decode_assignment,
    decode_status,
)

_encoder: Final = msgspec.json.Encoder()


def encode(frame: dict[str, Any]) -> str:
    """One frame's JSON text; called once per event whatever the number of sockets."""
    return _encoder.encode(frame).decode()


def now() -> float:
    return round(time.time(), 3)


@dataclass(slots=True)
class Fix:
    kind: Literal["courier", "vehicle"]
    id: str
    lat: float
    lon: float
    ts: float
    speed: float | None
    heading: float | None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    def item(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "lat": self.lat,
            "lon": self.lon,
            "ts": self.ts,
            "speed": self.speed,
            "heading": self.heading,
        }


def position(fix: ProtocolFix) -> Fix:
    """A validated fix of the wire protocol as the bridge relays it."""
    return Fix(
        fix.source_kind,
        fix.source_id,
        fix.lat,
        fix.lon,
        fix.fix_time.timestamp(),
        fix.speed,
        fix.heading,
    )


def presence_frame(event: PresenceEvent) -> dict[str, Any]:
    return {
        "type": "presence",
        "id": event.courier_id,
        "state": event.state,
        "ts": event.time.timestamp(),
    }


# --- the server's messages --------------------------------------------------------------
#: A server message the bridge cannot relay; `reason` is a metrics label.
InvalidPayload = InvalidServerMessage


@dataclass(slots=True)
class StatusEvent:
    """An order's full state after a change, as the API announced it."""

    order_id: str
    status: str
    courier_id: str | None
    restaurant_id: str
    customer_uid: str
    eta: str | None
    ts: float
    version: int | None
    event_id: int | None

    def frame(self) -> dict[str, Any]:
        return {
            "type": "status",
            "order": self.order_id,
            "status": self.status,
            "courier_id": self.courier_id,
            "eta": self.eta,
            "ts": self.ts,
            "version": self.version,
        }


def parse_status(order_id: str, payload: bytes) -> StatusEvent:
    message = decode_status(order_id, payload)
    return StatusEvent(
        order_id=order_id,
        status=message.status,
        courier_id=message.courier_id,
        restaurant_id=message.restaurant_id,
        customer_uid=message.customer_uid,
        eta=None if message.eta is None else message.eta.isoformat(),
        ts=message.ts.timestamp(),
        version=message.version or None,
        event_id=message.event_id,
    )


@dataclass(slots=True)
class AssignmentEvent:
    courier_id: str
    order_id: str
    action: Literal["assigned", "unassigned"]
    ts: float
    version: int | None
    event_id: int | None

    def frame(self) -> dict[str, Any]:
        return {
            "type": "assignment",
            "courier_id": self.courier_id,
            "order": self.order_id,
            "action": self.action,
            "ts": self.ts,
            "version": self.version,
        }


def parse_assignment(courier_id: str, payload: bytes) -> AssignmentEvent:
    message = decode_assignment(courier_id, payload)
    return AssignmentEvent(
        courier_id=courier_id,
        order_id=message.order_id,
        action="assigned" if message.type == "assignment" else "unassigned",
        ts=message.ts.timestamp(),
        version=message.version or None,
        event_id=message.event_id,
    )


@dataclass(slots=True)
class AlertEvent:
    """An alert the API stored (`alert_raised`) or an admin acknowledged."""

    alert_id: int
    state: Literal["raised", "acknowledged"]
    courier_id: str
    lat: float | None
    lon: float | None
    ts: float
    message: str
    acknowledged_by: str | None
    acknowledged_at: float | None
    event_id: int | None

    def frame(self) -> dict[str, Any]:
        return {
            "type": "emergency",
            "state": self.state,
            "alert_id": self.alert_id,
            "courier_id": self.courier_id,
            "lat": self.lat,
            "lon": self.lon,
            "ts": self.ts,
            "message": self.message,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at,
        }


def parse_alert(courier_id: str, payload: bytes) -> AlertEvent:
    message = decode_alert(courier_id, payload)
    acknowledged_at = message.acknowledged_at
    return AlertEvent(
        alert_id=message.alert_id,
        state="raised" if message.type == "alert_raised" else "acknowledged",
        courier_id=courier_id,
        lat=message.lat,
        lon=message.lon,
        ts=message.raised_at.timestamp(),
        message=message.message,
        acknowledged_by=message.acknowledged_by,
        acknowledged_at=None if acknowledged_at is None else acknowledged_at.timestamp(),
        event_id=message.event_id,
    )
