"""Committed changes as server messages (protocol.server_topics), queued in the outbox in
the same transaction as the change (store.outbox); the relay publishes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection

from protocol.server_topics import (
    AlertMessage,
    AssignmentMessage,
    Stop,
    alerts_topic,
    assignments_topic,
    order_status_message,
    order_status_topic,
)
from store import outbox
from store.alerts import AlertRow
from store.orders import OrderRow
from workflow import Status, StatusChange

Conn = AsyncConnection[Any]


async def announce_order_event(
    conn: Conn,
    prefix: str,
    order: OrderRow,
    *,
    event: Literal["status", "assignment", "eta"],
    previous_status: Status | None,
    ts: datetime,
    actor: str,
    note: str = "",
    previous_courier_id: str | None = None,
) -> None:
    message = order_status_message(
        order,
        event=event,
        previous_status=previous_status,
        ts=ts,
        actor=actor,
        note=note,
        previous_courier_id=previous_courier_id,
    )
    await outbox.enqueue(
        conn, topic=order_status_topic(order.id, prefix=prefix), message=message, kind=event
    )


async def announce_assignment(
    conn: Conn,
    prefix: str,
    order: OrderRow,
    *,
    courier_id: str,
    kind: Literal["assignment", "unassignment"],
    ts: datetime,
    reason: str = "",
) -> None:
    message = AssignmentMessage(
        type=kind,
        order_id=order.id,
        courier_id=courier_id,
        restaurant_id=order.restaurant_id,
        pickup=Stop(lat=order.pickup_lat, lon=order.pickup_lon),
        dropoff=Stop(lat=order.dropoff_lat, lon=order.dropoff_lon),
        promised_at=order.promised_at,
        ts=ts,
        reason=reason,
        version=order.version,
    )
    await outbox.enqueue(
        conn, topic=assignments_topic(courier_id, prefix=prefix), message=message, kind=kind
    )


async def announce_status_change(conn: Conn, prefix: str, change: StatusChange) -> None:
    """Announce an applied workflow step; a cancellation also unassigns the courier."""
    assert change.order is not None
    await announce_order_event(
        conn,
        prefix,
        change.order,
        event="status",
        previous_status=change.previous,
        ts=change.at,
        actor=change.actor.uid,
        note=change.note,
    )
    if change.status == Status.CANCELLED and change.order.courier_id:
        await announce_assignment(
            conn,
            prefix,
            change.order,
            courier_id=change.order.courier_id,
            kind="unassignment",
            ts=change.at,
            reason="order cancelled",
        )


async def announce_alert(
    conn: Conn,
    prefix: str,
    alert: AlertRow,
    *,
    kind: Literal["alert_raised", "alert_acknowledged"],
) -> None:
    message = AlertMessage(
        type=kind,
        alert_id=alert.id,
        courier_id=alert.courier_id,
        raised_at=alert.raised_at,
        lat=alert.lat,
        lon=alert.lon,
        message=alert.message,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
    )
    await outbox.enqueue(
        conn, topic=alerts_topic(alert.courier_id, prefix=prefix), message=message, kind=kind
    )
