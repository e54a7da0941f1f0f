"""Emergencies raised over MQTT (`fleet/couriers/{id}/emergency`) become alerts, stored and
published for admins like the ones raised over REST.

Several API instances share the stream through one MQTT 5 shared subscription, and the
alerts table's unique (courier_id, raised_at) makes a redelivered message harmless.
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

from api.events import publish_alert
from api.metrics import EMERGENCIES
from api.state import ApiState
from protocol import EmergencyEvent, MessageDecoder, shared_subscription

log = logging.getLogger("api.emergencies")

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


async def emergency_loop(state: ApiState) -> None:
    settings = state.settings
    decoder = MessageDecoder(
        prefix=settings.topic_prefix, max_future_skew_s=settings.max_future_skew_s
    )
    topic_filter = shared_subscription(
        f"{settings.topic_prefix}/couriers/+/emergency", group=SHARED_GROUP
    )
    credentials = state.publisher.credentials
    delay = 0.5
    while True:
        try:
            async with aiomqtt.Client(
                settings.mqtt_host,
                settings.mqtt_port,
                identifier=f"fleetpulse-api-alerts-{socket.gethostname()}-{os.getpid()}",
                username=credentials.username if credentials else None,
                password=credentials.password if credentials else None,
                protocol=aiomqtt.ProtocolVersion.V5,
                keepalive=30,
            ) as client:
                await client.subscribe(topic_filter, qos=1)
                delay = 0.5
                async for message in client.messages:
                    await _handle(state, decoder, str(message.topic), message.payload)
        except aiomqtt.MqttError as exc:
            log.warning("emergency subscription lost: %s; reconnecting", exc)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 30.0)


async def _handle(state: ApiState, decoder: MessageDecoder, topic: str, payload: Any) -> None:
    raw = payload if isinstance(payload, bytes) else str(payload).encode()
    decoded = decoder.decode(topic, raw, received_at=time.time())
    for rejection in decoded.rejections:
        # Ingest keeps the dead letter; here it is only counted.
        EMERGENCIES.labels("invalid").inc()
        log.info("ignored an invalid emergency on %s: %s", topic, rejection.reason)
    for event in decoded.events:
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
