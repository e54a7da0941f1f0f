"""Turning committed changes into MQTT messages (protocol.server_topics)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from api.publisher import Publisher
from protocol.server_topics import (
    AlertMessage,
    AssignmentMessage,
    Stop,
    alerts_topic,
    assignments_topic,
    order_status_message,
    order_status_topic,
)
from workflow import Status, StatusChange


def publish_order_event(
    publisher: Publisher,
    prefix: str,
    order: dict[str, Any],
    *,
    event: Literal["status", "assignment", "eta"],
    previous_status: str | None,
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
    publisher.publish(order_status_topic(order["id"], prefix=prefix), message.encode(), kind=event)


def publish_assignment(
    publisher: Publisher,
    prefix: str,
    order: dict[str, Any],
    *,
    courier_id: str,
    kind: Literal["assignment", "unassignment"],
    ts: datetime,
    reason: str = "",
) -> None:
    message = AssignmentMessage(
        type=kind,
        order_id=order["id"],
        courier_id=courier_id,
        restaurant_id=order["restaurant_id"],
        pickup=Stop(lat=order["pickup_lat"], lon=order["pickup_lon"]),
        dropoff=Stop(lat=order["dropoff_lat"], lon=order["dropoff_lon"]),
        promised_at=order["promised_at"],
        ts=ts,
        reason=reason,
    )
    publisher.publish(assignments_topic(courier_id, prefix=prefix), message.encode(), kind=kind)


def publish_status_change(publisher: Publisher, prefix: str, change: StatusChange) -> None:
    """Announce an applied workflow step; a cancellation also unassigns the courier."""
    assert change.order is not None
    publish_order_event(
        publisher,
        prefix,
        change.order,
        event="status",
        previous_status=change.previous,
        ts=change.at,
        actor=change.actor.uid,
        note=change.note,
    )
    if change.status == Status.CANCELLED and change.order["courier_id"]:
        publish_assignment(
            publisher,
            prefix,
            change.order,
            courier_id=change.order["courier_id"],
            kind="unassignment",
            ts=change.at,
            reason="order cancelled",
        )


def publish_alert(
    publisher: Publisher,
    prefix: str,
    alert: dict[str, Any],
    *,
    kind: Literal["alert_raised", "alert_acknowledged"],
) -> None:
    message = AlertMessage(type=kind, alert_id=alert["id"], **_alert_fields(alert))
    publisher.publish(alerts_topic(alert["courier_id"], prefix=prefix), message.encode(), kind=kind)


def _alert_fields(alert: dict[str, Any]) -> dict[str, Any]:
    keys = ("courier_id", "raised_at", "lat", "lon", "message", "acknowledged_by")
    return {key: alert[key] for key in (*keys, "acknowledged_at")}
