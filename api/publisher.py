"""Publishing server events on MQTT: a queue drained by one task that reconnects on its own.

Routes enqueue after their transaction committed and never wait for the broker; the task
publishes at QoS 1 and waits for each PUBACK, so a broker outage delays messages, in order,
without losing them (up to the queue bound, past which the oldest are dropped and counted).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass

import aiomqtt

from api.metrics import PUBLISH_FAILURES, PUBLISH_QUEUE, PUBLISHED
from broker import process_credentials
from config import Settings

log = logging.getLogger("api.publisher")


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    kind: str
    qos: int = 1


class Publisher:
    def __init__(self, settings: Settings, *, client_id: str, max_queue: int = 100_000) -> None:
        self._settings = settings
        self._client_id = client_id
        self._queue: deque[Outgoing] = deque()
        self._max_queue = max_queue
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.connected = False
        self.dropped = 0
        # The broker refuses anonymous clients; without a configured account we still try,
        # so a development broker that allows anonymous access keeps working.
        self.credentials = process_credentials(settings) if settings.mqtt_username else None

    def publish(self, topic: str, payload: bytes, *, kind: str, qos: int = 1) -> None:
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            log.error("MQTT publish queue full (%d); dropped the oldest message", self._max_queue)
        self._queue.append(Outgoing(topic, payload, kind, qos))
        PUBLISH_QUEUE.set(len(self._queue))
        self._idle.clear()
        self._wakeup.set()

    async def drained(self, deadline_s: float) -> bool:
        """Wait until everything queued has been acknowledged by the broker."""
        try:
            await asyncio.wait_for(self._idle.wait(), deadline_s)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Connect, publish what is queued, reconnect with jittered backoff; until cancelled."""
        delay = 0.5
        settings = self._settings
        while True:
            try:
                async with aiomqtt.Client(
                    settings.mqtt_host,
                    settings.mqtt_port,
                    identifier=self._client_id,
                    username=self.credentials.username if self.credentials else None,
                    password=self.credentials.password if self.credentials else None,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    keepalive=30,
                    timeout=10,
                ) as client:
                    self.connected = True
                    delay = 0.5
                    log.info("connected to MQTT %s", settings.mqtt_url)
                    await self._pump(client)
            except aiomqtt.MqttError as exc:
                if self.connected:
                    log.warning("MQTT connection lost: %s; reconnecting", exc)
                else:
                    log.warning("MQTT broker %s unreachable: %s", settings.mqtt_url, exc)
                PUBLISH_FAILURES.inc()
            finally:
                self.connected = False
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)

    async def _pump(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            message = self._queue[0]
            await client.publish(message.topic, message.payload, qos=message.qos)
            # Acknowledged by the broker: only now is it off the queue.
            if self._queue and self._queue[0] is message:
                self._queue.popleft()
            PUBLISHED.labels(message.kind).inc()
            PUBLISH_QUEUE.set(len(self._queue))
