"""What couriers' phones report over MQTT that the API acts on:

- emergencies (`fleet/couriers/{id}/emergency`) become alerts, stored and published for
  admins like the ones raised over REST; the alerts table's unique (courier_id, raised_at)
  makes a redelivered message harmless;
- delivery status reports (`fleet/couriers/{id}/deliveries/{order_id}/status`) go through
  the same workflow as REST calls: applied and published, or stored as `status_rejected`;
  a repeat or a redelivery changes nothing.

Several API instances share the stream through one MQTT 5 shared subscription.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from typing import Any

import aiomqtt
import psycopg
from psycopg.rows import dict_row

from api.events import publish_alert, publish_status_change
from api.metrics import DELIVERY_REPORTS, EMERGENCIES
from api.state import ApiState
from protocol import DeliveryStatusEvent, EmergencyEvent, MessageDecoder, shared_subscription
from workflow import Actor, StatusChange, apply_status

log = logging.getLogger("api.device_reports")

SHARED_GROUP = "api"
INSERT_ALERT_SQL = """
INSERT INTO alerts (courier_id, raised_at, lat, lon, message)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (courier_id, raised_at) DO UPDATE SET courier_id = excluded.courier_id
RETURNING id, courier_id, raised_at, lat, lon, message, acknowledged_by, acknowledged_at,
          (xmax = 0) AS inserted
"""


async def store_emergency(state: ApiState, event: EmergencyEvent) -> dict[str, Any]:
    """Store the alert (unless ingest, which stores emergencies too, or a redelivery got
    there first) and publish it with its id. Admins may see one alert announced twice after
    a redelivery; the alert id tells them it is the same."""
    async with (
        state.pool.connection() as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        await cur.execute(
            INSERT_ALERT_SQL,
            (event.courier_id, event.time, event.lat, event.lon, event.message[:2000]),
        )
        alert = await cur.fetchone()
    assert alert is not None
    inserted = alert.pop("inserted")
    publish_alert(state.publisher, state.settings.topic_prefix, alert, kind="alert_raised")
    return {**alert, "inserted": inserted}


async def apply_delivery_report(state: ApiState, event: DeliveryStatusEvent) -> StatusChange:
    """A courier's MQTT report, under the same rules as a courier's REST call."""
    actor = Actor(role="courier", uid=f"courier:{event.courier_id}", courier_id=event.courier_id)
    async with state.transaction() as conn:
        change = await apply_status(
            conn,
            order_id=event.order_id,
            target=event.status,
            actor=actor,
            note=event.note or "",
            at=event.time,
            source="mqtt",
            dedup_key=f"applied/{event.dedup_key}",
            record_rejection=True,
            eta_params=state.eta_params,
        )
    if change.outcome == "applied":
        publish_status_change(state.publisher, state.settings.topic_prefix, change)
    return change


async def device_report_loop(state: ApiState) -> None:
    settings = state.settings
    decoder = MessageDecoder(
        prefix=settings.topic_prefix, max_future_skew_s=settings.max_future_skew_s
    )
    couriers = f"{settings.topic_prefix}/couriers/+"
    topic_filters = [
        shared_subscription(f"{couriers}/emergency", group=SHARED_GROUP),
        shared_subscription(f"{couriers}/deliveries/+/status", group=SHARED_GROUP),
    ]
    credentials = state.publisher.credentials
    delay = 0.5
    while True:
        try:
            async with aiomqtt.Client(
                settings.mqtt_host,
                settings.mqtt_port,
                identifier=f"fleetpulse-api-reports-{socket.gethostname()}-{os.getpid()}",
                username=credentials.username if credentials else None,
                password=credentials.password if credentials else None,
                protocol=aiomqtt.ProtocolVersion.V5,
                keepalive=30,
            ) as client:
                await client.subscribe([(topic_filter, 1) for topic_filter in topic_filters])
                delay = 0.5
                async for message in client.messages:
                    await _handle(state, decoder, str(message.topic), message.payload)
        except aiomqtt.MqttError as exc:
            log.warning("device report subscription lost: %s; reconnecting", exc)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 30.0)


async def _handle(state: ApiState, decoder: MessageDecoder, topic: str, payload: Any) -> None:
    raw = payload if isinstance(payload, bytes) else str(payload).encode()
    decoded = decoder.decode(topic, raw, received_at=time.time())
    for rejection in decoded.rejections:
        # Ingest keeps the dead letter; here it is only counted.
        counter = DELIVERY_REPORTS if "/deliveries/" in topic else EMERGENCIES
        counter.labels("invalid").inc()
        log.info("ignored an invalid report on %s: %s", topic, rejection.reason)
    for event in decoded.events:
        if isinstance(event, DeliveryStatusEvent):
            await _apply_until_stored(state, event)
            continue
        if not isinstance(event, EmergencyEvent):
            continue
        while True:
            try:
                alert = await store_emergency(state, event)
                break
            except (psycopg.Error, OSError, TimeoutError) as exc:
                # An emergency is never dropped for a database hiccup: retry until stored.
                EMERGENCIES.labels("retried").inc()
                log.warning("cannot store an emergency yet (%s); retrying", exc)
                await asyncio.sleep(1.0)
        EMERGENCIES.labels("stored" if alert["inserted"] else "already_stored").inc()


async def _apply_until_stored(state: ApiState, event: DeliveryStatusEvent) -> None:
    while True:
        try:
            change = await apply_delivery_report(state, event)
            break
        except (psycopg.Error, OSError, TimeoutError) as exc:
            DELIVERY_REPORTS.labels("retried").inc()
            log.warning("cannot apply a delivery report yet (%s); retrying", exc)
            await asyncio.sleep(1.0)
    DELIVERY_REPORTS.labels(change.outcome).inc()
    if change.outcome == "rejected":
        log.info(
            "refused %s's report %s for order %s: %s",
            event.courier_id,
            event.status,
            event.order_id,
            change.reason,
        )
