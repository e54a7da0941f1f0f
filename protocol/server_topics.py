"""Payloads the server itself publishes (the API, also for couriers' MQTT reports, which
ingest only stores in the inbox), on the server topics of protocol.topics.

| topic | QoS | retained | who reads it |
|---|---|---|---|
| `{prefix}/couriers/{courier_id}/assignments` | 1 | no | the courier's phone; the bridge |
| `{prefix}/orders/{order_id}/status` | 1 | no | the bridge (customer, restaurant, admin) |
| `{prefix}/alerts/{courier_id}` | 1 | no | the bridge (admins) |

Payloads are JSON objects with a `type` field; times are ISO 8601 in UTC. Every one is
published from the API's transactional outbox (docs/architecture.md) and carries
`event_id`, the outbox row's id: a relay that crashed between the broker's PUBACK and
marking the row sent publishes it again with the same id, so readers drop a repeat by it.
Order announcements also carry `version`, the order's version after the change: a reader
applies an order's announcements by version, never by arrival or by `ts`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from protocol.topics import alerts_topic, assignments_topic, order_status_topic

SERVER_QOS = 1

__all__ = [
    "SERVER_QOS",
    "AlertMessage",
    "AssignmentMessage",
    "OrderStatusMessage",
    "Stop",
    "alerts_topic",
    "assignments_topic",
    "order_status_message",
    "order_status_topic",
]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The outbox row's id, set by the relay when it publishes; None before.
    event_id: int | None = None

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


class Stop(BaseModel):
    model_config = ConfigDict(frozen=True)
    lat: float
    lon: float


class AssignmentMessage(_Message):
    """To a courier: deliver this order (`assignment`) or stop, it went elsewhere
    (`unassignment`, on the same topic because a device may read only that one)."""

    type: Literal["assignment", "unassignment"]
    order_id: str
    courier_id: str
    restaurant_id: str
    pickup: Stop
    dropoff: Stop
    promised_at: datetime
    ts: datetime
    reason: str = ""
    #: The order's version after this change (orders.version).
    version: int = 0


class OrderStatusMessage(_Message):
    """An order's status or ETA changed (`event`: status, assignment or eta)."""

    type: Literal["status"] = "status"
    event: Literal["status", "assignment", "eta"]
    order_id: str
    status: str
    previous_status: str | None
    courier_id: str | None
    previous_courier_id: str | None = None
    restaurant_id: str
    customer_uid: str
    eta: datetime | None
    ts: datetime
    actor: str
    note: str = ""
    #: The order's version after this change (orders.version).
    version: int = 0


class AlertMessage(_Message):
    """An emergency alert was raised, or an admin acknowledged it."""

    type: Literal["alert_raised", "alert_acknowledged"]
    alert_id: int
    courier_id: str
    raised_at: datetime
    lat: float | None
    lon: float | None
    message: str
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None


def order_status_message(
    order: dict[str, Any],
    *,
    event: Literal["status", "assignment", "eta"],
    previous_status: str | None,
    ts: datetime,
    actor: str,
    note: str = "",
    previous_courier_id: str | None = None,
) -> OrderStatusMessage:
    """The status event for an order row by column name (store.orders.OrderRow.as_dict())."""
    return OrderStatusMessage(
        event=event,
        order_id=order["id"],
        status=order["status"],
        previous_status=previous_status,
        courier_id=order["courier_id"],
        previous_courier_id=previous_courier_id,
        restaurant_id=order["restaurant_id"],
        customer_uid=order["customer_uid"],
        eta=order["eta"],
        ts=ts,
        actor=actor,
        note=note,
        version=order.get("version", 0),
    )
