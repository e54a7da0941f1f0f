"""Payloads the server itself publishes (the API, also for couriers' MQTT reports, which
ingest only stores in the inbox), on the server topics of protocol.topics.

| topic | QoS | retained | who reads it |
|---|---|---|---|
| `{prefix}/couriers/{courier_id}/assignments` | 1 | no | the courier's phone; the bridge |
| `{prefix}/orders/{order_id}/status` | 1 | no | the bridge (customer, restaurant, admin) |
| `{prefix}/alerts/{courier_id}` | 1 | no | the bridge (admins) |

Payloads are JSON objects with a `type` field; times are ISO 8601 with an offset (the API
writes UTC). Every one is published from the API's transactional outbox
(docs/architecture.md) and carries `event_id`, the outbox row's id: a relay that crashed
between the broker's PUBACK and marking the row sent publishes it again with the same id, so
readers drop a repeat by it. Order announcements also carry `version`, the order's version
after the change: a reader applies an order's announcements by version, never by arrival or
by `ts`.

The constraints are in the types (msgspec.Meta); a reader decodes with :func:`decode_status`,
:func:`decode_assignment` or :func:`decode_alert`, which bound the raw bytes first
(protocol.json_limits), check the payload against the topic's id, and raise
:class:`InvalidServerMessage` with a short `reason` (a metrics label) for anything else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal, Protocol, TypeVar

import msgspec

from protocol.json_limits import json_limit_violation
from protocol.payloads import MAX_PAYLOAD_BYTES, Latitude, Longitude
from protocol.statuses import Status
from protocol.topics import ID_PATTERN, alerts_topic, assignments_topic, order_status_topic

SERVER_QOS = 1

__all__ = [
    "SERVER_QOS",
    "AlertMessage",
    "AssignmentMessage",
    "EntityId",
    "InvalidServerMessage",
    "OrderStatusMessage",
    "RejectionReason",
    "Stop",
    "alerts_topic",
    "assignments_topic",
    "decode_alert",
    "decode_assignment",
    "decode_status",
    "order_status_message",
    "order_status_topic",
]

#: A courier, order or restaurant id: the whole value in the alphabet of topic levels
#: (protocol.topics.valid_id), so an id read from a payload is safe in a topic filter. (`\Z`,
#: not `$`: msgspec searches, and `$` would let a trailing newline through.)
EntityId = Annotated[str, msgspec.Meta(pattern=rf"^{ID_PATTERN.pattern}\Z")]
#: An aware time; encoded as ISO 8601 (`...Z` for UTC).
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
#: orders.version after the change; 0 in a message that carries none.
OrderVersion = Annotated[int, msgspec.Meta(ge=0)]

#: Why a server message was refused; each is a metrics label (bridge_mqtt_invalid_total).
RejectionReason = Literal[
    "too_large",
    "too_deep",
    "not_json",
    "bad_shape",
    "missing_field",
    "unknown_field",
    "bad_field",
    "bad_id",
    "id_mismatch",
]


class InvalidServerMessage(ValueError):
    """A server message outside its contract; `reason` is a metrics label."""

    def __init__(self, reason: RejectionReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RejectionReason = reason
        self.detail = detail


class _Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    #: The outbox row's id, set by the relay when it publishes; None before.
    event_id: int | None = None

    def encode(self) -> bytes:
        """The JSON payload, after checking it against the contract: the API never
        publishes what a reader would refuse."""
        data = _encoder.encode(self)
        try:
            msgspec.json.decode(data, type=type(self))
        except msgspec.ValidationError as exc:
            raise InvalidServerMessage(_reason(str(exc)), f"{type(self).__name__}: {exc}") from None
        return data


class Stop(msgspec.Struct, frozen=True):
    lat: Latitude
    lon: Longitude


class AssignmentMessage(_Message, frozen=True, kw_only=True):
    """To a courier: deliver this order (`assignment`) or stop, it went elsewhere
    (`unassignment`, on the same topic because a device may read only that one)."""

    type: Literal["assignment", "unassignment"]
    order_id: EntityId
    courier_id: EntityId
    restaurant_id: EntityId
    pickup: Stop
    dropoff: Stop
    promised_at: AwareTime
    ts: AwareTime
    reason: str = ""
    version: OrderVersion = 0


class OrderStatusMessage(_Message, frozen=True, kw_only=True):
    """An order's status or ETA changed (`event`: status, assignment or eta)."""

    type: Literal["status"] = "status"
    event: Literal["status", "assignment", "eta"]
    order_id: EntityId
    status: Status
    previous_status: Status | None
    courier_id: EntityId | None
    previous_courier_id: EntityId | None = None
    restaurant_id: EntityId
    customer_uid: str
    eta: AwareTime | None
    ts: AwareTime
    actor: str
    note: str = ""
    version: OrderVersion = 0


class AlertMessage(_Message, frozen=True, kw_only=True):
    """An emergency alert was raised, or an admin acknowledged it."""

    type: Literal["alert_raised", "alert_acknowledged"]
    alert_id: int
    courier_id: EntityId
    raised_at: AwareTime
    lat: Latitude | None
    lon: Longitude | None
    message: str
    acknowledged_by: str | None = None
    acknowledged_at: AwareTime | None = None


class OrderState(Protocol):
    """The columns of an order row an announcement carries (store.orders.OrderRow)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> Status: ...
    @property
    def courier_id(self) -> str | None: ...
    @property
    def restaurant_id(self) -> str: ...
    @property
    def customer_uid(self) -> str: ...
    @property
    def eta(self) -> datetime | None: ...
    @property
    def version(self) -> int: ...


def order_status_message(
    order: OrderState,
    *,
    event: Literal["status", "assignment", "eta"],
    previous_status: Status | None,
    ts: datetime,
    actor: str,
    note: str = "",
    previous_courier_id: str | None = None,
) -> OrderStatusMessage:
    """The status event for an order as it is after the change."""
    return OrderStatusMessage(
        event=event,
        order_id=order.id,
        status=order.status,
        previous_status=previous_status,
        courier_id=order.courier_id,
        previous_courier_id=previous_courier_id,
        restaurant_id=order.restaurant_id,
        customer_uid=order.customer_uid,
        eta=order.eta,
        ts=ts,
        actor=actor,
        note=note,
        version=order.version,
    )


# --- reading ------------------------------------------------------------------------------
_encoder: Final = msgspec.json.Encoder()
_Decoded = TypeVar("_Decoded", OrderStatusMessage, AssignmentMessage, AlertMessage)
_status_decoder: Final = msgspec.json.Decoder(OrderStatusMessage)
_assignment_decoder: Final = msgspec.json.Decoder(AssignmentMessage)
_alert_decoder: Final = msgspec.json.Decoder(AlertMessage)


def _reason(message: str) -> RejectionReason:
    """The label of a msgspec validation error, by its message."""
    if message.startswith("Object missing required field"):
        return "missing_field"
    if message.startswith("Object contains unknown field"):
        return "unknown_field"
    if message.startswith("Expected `object`"):
        return "bad_shape"
    if message.startswith("Expected `str` matching regex"):
        return "bad_id"
    return "bad_field"


def _decode(decoder: msgspec.json.Decoder[_Decoded], payload: bytes) -> _Decoded:
    violation = json_limit_violation(payload, max_bytes=MAX_PAYLOAD_BYTES)
    if violation is not None:
        reason: RejectionReason = "too_large" if violation.code == "too_large" else "too_deep"
        raise InvalidServerMessage(reason, violation.reason)
    try:
        return decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise InvalidServerMessage(_reason(str(exc)), f"{decoder.type.__name__}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidServerMessage("not_json", str(exc)) from None


def _same_id(topic_id: str, payload_id: str, name: str) -> None:
    if payload_id != topic_id:
        raise InvalidServerMessage(
            "id_mismatch", f"{name} {payload_id!r} is not the topic's {topic_id!r}"
        )


def decode_status(order_id: str, payload: bytes) -> OrderStatusMessage:
    """The message on `{prefix}/orders/{order_id}/status`, or InvalidServerMessage."""
    message = _decode(_status_decoder, payload)
    _same_id(order_id, message.order_id, "order_id")
    return message


def decode_assignment(courier_id: str, payload: bytes) -> AssignmentMessage:
    """The message on `{prefix}/couriers/{courier_id}/assignments`, or InvalidServerMessage."""
    message = _decode(_assignment_decoder, payload)
    _same_id(courier_id, message.courier_id, "courier_id")
    return message


def decode_alert(courier_id: str, payload: bytes) -> AlertMessage:
    """The message on `{prefix}/alerts/{courier_id}`, or InvalidServerMessage."""
    message = _decode(_alert_decoder, payload)
    _same_id(courier_id, message.courier_id, "courier_id")
    return message
