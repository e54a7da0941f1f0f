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

MAX_PAYLOAD_BYTES: Final = 64 * 1024
ORDER_STATUSES: Final = frozenset(
    {"pending", "assigned", "picked_up", "out_for_delivery", "delivered", "cancelled"}
)
ACTIVE_STATUSES: Final = frozenset({"assigned", "picked_up", "out_for_delivery"})
PRESENCE_STATES: Final = frozenset({"online", "offline", "busy"})

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


def _fix(kind: Literal["courier", "vehicle"], entity_id: str, data: object) -> Fix:
    if not isinstance(data, dict):
        raise InvalidPayload("bad_shape", "a fix must be a JSON object")
    if "lat" not in data or "lon" not in data or "ts" not in data:
        raise InvalidPayload("missing_field", "lat, lon and ts are required")
    lat = _number(data["lat"], "lat")
    lon = _number(data["lon"], "lon")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InvalidPayload("out_of_range", "lat/lon")
    return Fix(
        kind,
        entity_id,
        lat,
        lon,
        epoch_seconds(data["ts"]),
        _optional_number(data, "speed"),
        _optional_number(data, "heading"),
    )


def parse_location(kind: Literal["courier", "vehicle"], entity_id: str, payload: bytes) -> Fix:
    """The newest valid fix of a native payload (one object, or a batch array)."""
    data = decode(payload)
    if isinstance(data, list):
        newest: Fix | None = None
        for element in data:
            try:
                fix = _fix(kind, entity_id, element)
            except InvalidPayload:
                continue
            if newest is None or fix.ts > newest.ts:
                newest = fix
        if newest is None:
            raise InvalidPayload("no_valid_fix", "the batch holds no valid fix")
        return newest
    return _fix(kind, entity_id, data)


def parse_owntracks(courier_id: str, payload: bytes) -> Fix | None:
    """An OwnTracks location as a courier fix; other OwnTracks types are not relayed."""
    data = decode(payload)
    if not isinstance(data, dict):
        raise InvalidPayload("bad_shape", "OwnTracks payloads are JSON objects")
    if data.get("_type") != "location":
        return None
    if "tst" not in data:
        raise InvalidPayload("missing_field", "tst is required")
    velocity = _optional_number(data, "vel")
    native = {
        "lat": data.get("lat"),
        "lon": data.get("lon"),
        "ts": data["tst"],
        "speed": None if velocity is None else velocity / 3.6,
        "heading": data.get("cog"),
    }
    return _fix("courier", courier_id, native)


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


def parse_assignment(courier_id: str, payload: bytes) -> AssignmentEvent:
    data = decode(payload)
    if not isinstance(data, dict):
        raise InvalidPayload("bad_shape", "an assignment is a JSON object")
    action = data.get("action", data.get("type"))
    if action not in ("assigned", "unassigned"):
        raise InvalidPayload("bad_field", "action must be assigned or unassigned")
    order_id = data.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise InvalidPayload("missing_field", "order_id is required")
    return AssignmentEvent(
        courier_id=courier_id,
        order_id=order_id,
        action="assigned" if action == "assigned" else "unassigned",
        ts=epoch_seconds(data.get("ts", time.time())),
    )


def parse_presence(courier_id: str, payload: bytes) -> dict[str, Any]:
    data = decode(payload)
    if not isinstance(data, dict) or data.get("state") not in PRESENCE_STATES:
        raise InvalidPayload("bad_field", "presence needs state online, offline or busy")
    ts = data.get("ts")
    return {
        "type": "presence",
        "id": courier_id,
        "state": data["state"],
        "ts": None if ts is None else epoch_seconds(ts),
    }


def parse_emergency(courier_id: str, payload: bytes) -> dict[str, Any]:
    data = decode(payload)
    if not isinstance(data, dict):
        raise InvalidPayload("bad_shape", "an emergency is a JSON object")
    # An emergency is relayed even when parts of it are unreadable: admins must see it.
    message = data.get("message", "")
    try:
        ts = epoch_seconds(data.get("ts", time.time()))
    except InvalidPayload:
        ts = time.time()
    position: list[float | None] = []
    for name in ("lat", "lon"):
        try:
            position.append(_optional_number(data, name))
        except InvalidPayload:
            position.append(None)
    return {
        "type": "emergency",
        "courier_id": courier_id,
        "lat": position[0],
        "lon": position[1],
        "ts": ts,
        "message": message if isinstance(message, str) else str(message)[:2000],
    }
