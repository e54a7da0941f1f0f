"""The bridge's one MQTT connection: reconnect with jittered backoff, resubscribe, relay."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import aiomqtt

from bridge.metrics import BridgeMetrics
from bridge.subscriptions import SubscriptionManager
from broker.accounts import MqttCredentials
from config import Settings
from mqttlink import Backoff, stay_connected

log = logging.getLogger("bridge.mqtt")

YIELD_EVERY = 16

OnMessage = Callable[[str, bytes, float], Awaitable[None]]


def client_id(settings: Settings) -> str:
    # Each bridge instance is its own live-only client: clean start, no shared session.
    configured = settings.bridge_client_id
    return configured or f"bridge-{socket.gethostname()[:20]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class MqttRelay:
    def __init__(
        self,
        *,
        settings: Settings,
        subscriptions: SubscriptionManager,
        on_message: OnMessage,
        metrics: BridgeMetrics,
        credentials: MqttCredentials,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._metrics = metrics
        self.connected = False

    async def run(self) -> None:
        settings = self._settings
        identifier = client_id(settings)
        credentials = self._credentials

        def connect() -> aiomqtt.Client:
            return aiomqtt.Client(
                settings.mqtt_host,
                settings.mqtt_port,
                identifier=identifier,
                username=credentials.username,
                password=credentials.password,
                # 3.1.1: the bridge needs no MQTT 5 feature, and paho decodes a v5
                # PUBLISH's properties on every message (measured: docs/benchmarks.md).
                protocol=aiomqtt.ProtocolVersion.V311,
                clean_session=True,
                keepalive=30,
            )

        async def relay(client: aiomqtt.Client) -> None:
            log.info("connected to MQTT %s as %s", settings.mqtt_url, identifier)
            self.connected = True
            self._subscriptions.attach(client)
            on_message = self._on_message
            relayed = 0
            async for message in client.messages:
                payload = message.payload
                raw = payload if isinstance(payload, bytes) else str(payload).encode()
                await on_message(message.topic.value, raw, time.monotonic())
                relayed += 1
                if relayed % YIELD_EVERY == 0:
                    # A queued burst never suspends the loop by itself; let the sockets'
                    # senders write between slices of it.
                    await asyncio.sleep(0)

        def lost(_exc: aiomqtt.MqttError) -> None:
            self.connected = False
            self._subscriptions.detach()
            self._metrics.mqtt_reconnects.inc()

        await stay_connected(
            name=f"bridge {settings.mqtt_url}",
            connect=connect,
            session=relay,
            backoff=Backoff(),
            on_lost=lost,
        )
