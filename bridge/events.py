"""MQTT payloads turned into the events the bridge relays, and those events into frames.

Only what the browser needs is read; ingest keeps the full record and the dead letters. A
payload the bridge cannot read raises InvalidPayload and is counted, never relayed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from protocol.payloads import EmergencyEvent, PresenceEvent
from protocol.payloads import Fix as ProtocolFix

MAX_PAYLOAD_BYTES: Final = 64 * 1024
ORDER_STATUSES: Final = frozenset(
    {"pending", "assigned", "picked_up", "out_for_delivery", "delivered", "cancelled"}
)
ACTIVE_STATUSES: Final = frozenset({"assigned", "picked_up", "out_for_delivery"})

_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()


class InvalidPayload(Exception):
    """A message the bridge cannot relay; `reason` is a metrics label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def encode(frame: dict[str, Any]) -> str:
    """One frame's JSON text; called once per event whatever the number of sockets."""
    return _encoder.encode(frame).decode()


def now() -> float:
    return round(time.time(), 3)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidPayload("bad_field", f"{name} must be a number")
    return float(value)


def _optional_number(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    return None if value is None else _number(value, name)


def epoch_seconds(value: object, name: str = "ts") -> float:
    """An ISO 8601 time with an offset, or epoch seconds, as epoch seconds."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidPayload("bad_field", f"{name} is not ISO 8601") from None
        if parsed.tzinfo is None:
            raise InvalidPayload("bad_field", f"{name} needs a UTC offset")
        return parsed.timestamp()
    return _number(value, name)


def decode(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidPayload("too_large")
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError:
        raise InvalidPayload("not_json") from None


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


def emergency_frame(event: EmergencyEvent) -> dict[str, Any]:
    return {
        "type": "emergency",
        "state": "raised",
        "alert_id": None,
        "courier_id": event.courier_id,
        "lat": event.lat,
        "lon": event.lon,
        "ts": event.time.timestamp(),
        "message": event.message,
    }


@dataclass(slots=True)
class StatusEvent:
    order_id: str
    status: str
    courier_id: str | None
    restaurant_id: str | None
    eta: str | None
    ts: float

    def frame(self) -> dict[str, Any]:
        return {
            "type": "status",
            "order": self.order_id,
            "status": self.status,
            "courier_id": self.courier_id,
            "eta": self.eta,
            "ts": self.ts,
        }


def _optional_id(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidPayload("bad_field", f"{name} must be a string")
    return value


def _optional_time(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value)).astimezone().isoformat()
    if isinstance(value, str):
        epoch_seconds(value, name)
        return value
    raise InvalidPayload("bad_field", f"{name} must be a time")


def parse_status(order_id: str, payload: bytes) -> StatusEvent:
    data = decode(payload)
    if not isinstance(data, dict):
        raise InvalidPayload("bad_shape", "a status event is a JSON object")
    status = data.get("status")
    if status not in ORDER_STATUSES:
        raise InvalidPayload("bad_field", f"unknown status {status!r}")
    return StatusEvent(
        order_id=order_id,
        status=str(status),
        courier_id=_optional_id(data, "courier_id"),
        restaurant_id=_optional_id(data, "restaurant_id"),
        eta=_optional_time(data, "eta"),
        ts=epoch_seconds(data.get("ts", time.time())),
    )


@dataclass(slots=True)
class AssignmentEvent:
    courier_id: str
    order_id: str
    action: Literal["assigned", "unassigned"]
    ts: float

    def frame(self) -> dict[str, Any]:
        return {
            "type": "assignment",
            "courier_id": self.courier_id,
            "order": self.order_id,
            "action": self.action,
            "ts": self.ts,
        }


_ASSIGNMENT_ACTIONS: Final[dict[object, Literal["assigned", "unassigned"]]] = {
    "assignment": "assigned",
    "unassignment": "unassigned",
}


def parse_assignment(courier_id: str, payload: bytes) -> AssignmentEvent:
    data = decode(payload)
    if not isinstance(data, dict):
        raise InvalidPayload("bad_shape", "an assignment is a JSON object")
    action = _ASSIGNMENT_ACTIONS.get(data.get("type"))
    if action is None:
        raise InvalidPayload("bad_field", "type must be assignment or unassignment")
    order_id = data.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise InvalidPayload("missing_field", "order_id is required")
    return AssignmentEvent(
        courier_id=courier_id,
        order_id=order_id,
        action=action,
        ts=epoch_seconds(data.get("ts", time.time())),
    )


def parse_alert(courier_id: str, payload: bytes) -> dict[str, Any]:
    """An alert the API stored (`alert_raised`) or an admin acknowledged."""
    data = decode(payload)
    if not isinstance(data, dict):
        raise InvalidPayload("bad_shape", "an alert is a JSON object")
    kind = data.get("type")
    if kind not in ("alert_raised", "alert_acknowledged"):
        raise InvalidPayload("bad_field", f"unknown alert type {kind!r}")
    message = data.get("message", "")
    acknowledged_at = data.get("acknowledged_at")
    return {
        "type": "emergency",
        "state": "raised" if kind == "alert_raised" else "acknowledged",
        "alert_id": data.get("alert_id"),
        "courier_id": courier_id,
        "lat": _optional_number(data, "lat"),
        "lon": _optional_number(data, "lon"),
        "ts": epoch_seconds(data.get("raised_at", time.time()), "raised_at"),
        "message": message if isinstance(message, str) else "",
        "acknowledged_by": _optional_id(data, "acknowledged_by"),
        "acknowledged_at": None
        if acknowledged_at is None
        else epoch_seconds(acknowledged_at, "acknowledged_at"),
    }
