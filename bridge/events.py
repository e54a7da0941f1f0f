"""MQTT payloads turned into the events the bridge relays, and those events into frames.

Only what the browser needs is read; ingest keeps the full record and the dead letters. A
payload the bridge cannot read raises InvalidPayload and is counted, never relayed. The
server's messages (order status, assignments, alerts) are read with the protocol's own
models (protocol.server_topics), after the raw bounds of protocol.json_limits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, TypeVar

import msgspec
from pydantic import BaseModel, ValidationError

from protocol.json_limits import json_limit_violation
from protocol.payloads import Fix as ProtocolFix
from protocol.payloads import PresenceEvent
from protocol.server_topics import AlertMessage, AssignmentMessage, OrderStatusMessage
from protocol.statuses import ORDER_STATUSES
from protocol.topics import valid_id

MAX_PAYLOAD_BYTES: Final = 64 * 1024

_encoder: Final = msgspec.json.Encoder()

_Model = TypeVar("_Model", bound=BaseModel)


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
_VALIDATION_REASONS: Final = {
    "json_invalid": "not_json",
    "json_type": "not_json",
    "model_type": "bad_shape",
    "model_attributes_type": "bad_shape",
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
}


def _validated(model: type[_Model], payload: bytes) -> _Model:
    violation = json_limit_violation(payload, max_bytes=MAX_PAYLOAD_BYTES)
    if violation is not None:
        raise InvalidPayload(violation.code, violation.reason)
    try:
        return model.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        reason = _VALIDATION_REASONS.get(first["type"], "bad_field")
        raise InvalidPayload(reason, f"{model.__name__} {where}: {first['msg']}") from None


def _epoch(value: datetime, name: str) -> float:
    if value.tzinfo is None:
        raise InvalidPayload("bad_field", f"{name} needs a UTC offset")
    return value.timestamp()


def _same_id(topic_id: str, payload_id: str, name: str) -> None:
    if payload_id != topic_id:
        raise InvalidPayload(
            "id_mismatch", f"{name} {payload_id!r} is not the topic's {topic_id!r}"
        )


def _entity_id(value: str | None, name: str) -> str | None:
    # Ids end up in topic filters the bridge subscribes to: never a wildcard or a level.
    if value is not None and not valid_id(value):
        raise InvalidPayload("bad_id", f"{name} is not 1-64 characters of [A-Za-z0-9_-]")
    return value


def _coordinate(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise InvalidPayload("bad_field", f"{name} must be a finite number")
    return value


def _version(value: int) -> int | None:
    """An order's version; None for a message that carries none (0, the model's default)."""
    if value < 0:
        raise InvalidPayload("bad_field", "version must not be negative")
    return value or None


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
    message = _validated(OrderStatusMessage, payload)
    _same_id(order_id, message.order_id, "order_id")
    if message.status not in ORDER_STATUSES:
        raise InvalidPayload("bad_field", f"unknown status {message.status!r}")
    return StatusEvent(
        order_id=order_id,
        status=message.status,
        courier_id=_entity_id(message.courier_id, "courier_id"),
        restaurant_id=str(_entity_id(message.restaurant_id, "restaurant_id")),
        customer_uid=message.customer_uid,
        eta=None if message.eta is None else message.eta.isoformat(),
        ts=_epoch(message.ts, "ts"),
        version=_version(message.version),
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
    message = _validated(AssignmentMessage, payload)
    _same_id(courier_id, message.courier_id, "courier_id")
    return AssignmentEvent(
        courier_id=courier_id,
        order_id=str(_entity_id(message.order_id, "order_id")),
        action="assigned" if message.type == "assignment" else "unassigned",
        ts=_epoch(message.ts, "ts"),
        version=_version(message.version),
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
    message = _validated(AlertMessage, payload)
    _same_id(courier_id, message.courier_id, "courier_id")
    acknowledged_at = message.acknowledged_at
    return AlertEvent(
        alert_id=message.alert_id,
        state="raised" if message.type == "alert_raised" else "acknowledged",
        courier_id=courier_id,
        lat=_coordinate(message.lat, "lat"),
        lon=_coordinate(message.lon, "lon"),
        ts=_epoch(message.raised_at, "raised_at"),
        message=message.message,
        acknowledged_by=message.acknowledged_by,
        acknowledged_at=None
        if acknowledged_at is None
        else _epoch(acknowledged_at, "acknowledged_at"),
        event_id=message.event_id,
    )
