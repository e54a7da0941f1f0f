"""The outbox relay: publishes committed announcements (store.outbox) at QoS 1, in order.

One relay runs at a time however many API instances there are: each takes a PostgreSQL
advisory lock first, and the others wait for it. The relay wakes on the outbox's NOTIFY
(and polls as a fallback), publishes a batch, waits for every PUBACK, then deletes the
batch's rows. A broker or database outage delays announcements; it loses none.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomqtt
import psycopg

from api.metrics import OUTBOX_BACKLOG, PUBLISH_FAILURES, PUBLISHED
from broker import process_credentials
from config import Settings
from mqttlink import Backoff
from protocol.server_topics import SERVER_QOS
from store import outbox
from store.notify import listening, next_notification

log = logging.getLogger("api.outbox")

RELAY_LOCK_ID = 0x6F757462  # "outb"
BATCH_LIMIT = 500
POLL_S = 1.0


class OutboxRelay:
    def __init__(self, settings: Settings, *, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self.connected = False
        self.leading = False
        #: Another instance holds the relay lock; this one waits to take over.
        self.standing_by = False
        # The broker refuses anonymous clients; without a configured account we still try,
        # so a development broker that allows anonymous access keeps working.
        self.credentials = process_credentials(settings) if settings.mqtt_username else None
        self._idle = asyncio.Event()

    async def drained(self, deadline_s: float) -> bool:
        """Wait until the outbox was found empty once more (the requests before this call
        committed their announcements), or the deadline passes."""
        if not self.leading:
            return True
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), deadline_s)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Relay until cancelled, reconnecting to both servers with jittered backoff."""
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        while True:
            try:
                async with listening(self._settings.dsn, outbox.OUTBOX_CHANNEL) as conn:
                    await self._lead(conn)
                    async with self._client() as client:
                        self.connected = True
                        backoff.reset()
                        log.info("relaying the outbox to MQTT %s", self._settings.mqtt_url)
                        await self._pump(conn, client)
            except aiomqtt.MqttError as exc:
                PUBLISH_FAILURES.inc()
                log.warning("MQTT %s: %s; the outbox waits", self._settings.mqtt_url, exc)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                log.warning("database unavailable for the outbox relay: %s", exc)
            finally:
                self.connected = False
                self.leading = self.standing_by = False
            await asyncio.sleep(backoff.next_delay())

    def _client(self) -> aiomqtt.Client:
        settings = self._settings
        return aiomqtt.Client(
            settings.mqtt_host,
            settings.mqtt_port,
            identifier=self._client_id,
            username=self.credentials.username if self.credentials else None,
            password=self.credentials.password if self.credentials else None,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=30,
            timeout=10,
        )

    async def _lead(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Hold the relay lock for as long as this connection lives."""
        announced = False
        standby = Backoff(base_s=2.0, cap_s=2.0)
        while True:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_ID,))
            row = await cur.fetchone()
            if row is not None and row[0]:
                self.leading, self.standing_by = True, False
                return
            self.standing_by = True
            if not announced:
                log.info("another API instance relays the outbox; standing by")
                announced = True
            await asyncio.sleep(standby.next_delay())

    async def _pump(self, conn: psycopg.AsyncConnection[Any], client: aiomqtt.Client) -> None:
        while True:
            batch = await outbox.pending(conn, limit=BATCH_LIMIT)
            if batch:
                # paho sends in call order; gathering only overlaps the waits for PUBACKs.
                await asyncio.gather(
                    *(client.publish(a.topic, a.payload, qos=SERVER_QOS) for a in batch)
                )
                await outbox.mark_sent(conn, [a.id for a in batch])
                for announcement in batch:
                    PUBLISHED.labels(announcement.kind).inc()
                OUTBOX_BACKLOG.set(len(batch))
                continue
            OUTBOX_BACKLOG.set(0)
            self._idle.set()
            await next_notification(conn, within_s=POLL_S)
