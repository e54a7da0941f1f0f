"""ingest's MQTT link: a shared subscription over mqttlink's manual-ack session, and the
clean way out of the shared group on stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Final

from broker.accounts import process_credentials
from config import Settings
from mqttlink import Backoff
from mqttlink.codec import ConnAck, Subscription
from mqttlink.session import ConnectOptions, ManualAckSession
from protocol import ingest_filters, shared_subscription

log = logging.getLogger("ingest.mqtt")

# (topic, payload, packet id, qos); topic may be bytes that are not UTF-8.
MessageHandler = Callable[[str | bytes, bytes, int, int], None]
#: Marks the standby subscription a clean stop leaves in the session (see leave_group).
STANDBY_SUBSCRIPTION_ID: Final = 1


def default_client_id() -> str:
    """Stable across restarts, so the broker's persistent session is found again."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"fleetpulse-ingest-{host}"[:64]


def connect_options(settings: Settings, *, client_id: str) -> ConnectOptions:
    """The one place ingest's connection is described (account, session, flow control)."""
    # The broker refuses anonymous clients: FLEETPULSE_MQTT_USERNAME/PASSWORD, or the local
    # stack's ingest account from its secrets file.
    credentials = process_credentials(settings, account="ingest")
    return ConnectOptions(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=client_id,
        username=credentials.username,
        password=credentials.password,
        keepalive_s=settings.ingest_keepalive_s,
        session_expiry_s=settings.ingest_session_expiry_s,
        receive_maximum=settings.ingest_receive_maximum,
    )


class MqttLink:
    """Keeps ingest subscribed to the shared group, and leaves it cleanly on stop.

    Messages reach ``on_message`` in arrival order; acks go out only through
    ``ack_many``, after the caller committed. ``generation`` and ``connected`` are the
    session's (see mqttlink.session)."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_message: MessageHandler,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id or settings.ingest_client_id or default_client_id()
        self._on_message = on_message
        filters = ingest_filters(prefix=settings.topic_prefix)
        self._standby = list(filters)
        self._shared = [shared_subscription(f, group=settings.ingest_shared_group) for f in filters]
        #: Set once this worker left the shared group: a reconnect does not rejoin it, and
        #: what only the standby subscription matched is left unacknowledged in the session.
        self.left_group = False
        self.session = ManualAckSession(
            connect_options(settings, client_id=self.client_id),
            name="ingest",
            on_publish=self._publish,
            on_connected=self._subscribe,
            backoff=Backoff(base_s=0.1, cap_s=settings.ingest_retry_max_s),
        )
        self.connected = self.session.connected

    @property
    def generation(self) -> int:
        return self.session.generation

    def _publish(
        self, topic: bytes, payload: bytes, packet_id: int, qos: int, ids: tuple[int, ...]
    ) -> None:
        if ids and self.left_group and STANDBY_SUBSCRIPTION_ID in ids:
            # Published after this worker left: it waits, unacknowledged, in the session
            # for this worker's return (or a restart of the last worker).
            return
        try:
            text: str | bytes = topic.decode()
        except UnicodeDecodeError:
            text = topic
        self._on_message(text, payload, packet_id, qos)

    def _subscribe(self, connack: ConnAck) -> None:
        if not self.left_group:
            self.session.subscribe([Subscription(topic, qos=1) for topic in self._shared])
            # Back in the group: drop the standby copy a clean stop left (what it queued
            # meanwhile is in the session already and still arrives).
            self.session.unsubscribe_soon(self._standby)
        log.info(
            "connected to %s as %s (session %s); subscribed to %s",
            self.session.options.url,
            self.client_id,
            "resumed" if connack.session_present else "new",
            ", ".join(self._shared),
        )

    async def leave_group(self, *, within_s: float) -> bool:
        """Leave the shared group, so the broker routes new messages to the workers that
        remain; what it already gave this session still arrives.

        First the session gets a plain standby subscription (retained messages not
        replayed, marked by a subscription identifier), then the shared one goes: no
        message published meanwhile matches neither, so if this was the last worker
        nothing is lost. Standby messages are left unacknowledged while this worker stops:
        they wait in its session, and its return only replays what the others stored
        (deduplicated). True once the broker confirmed."""
        self.left_group = True
        if not self.connected.is_set():
            return False
        self.session.subscribe(
            [Subscription(topic, qos=1, retain_handling=2) for topic in self._standby],
            subscription_id=STANDBY_SUBSCRIPTION_ID,
        )
        if not await self.session.unsubscribe(self._shared, within_s=within_s):
            log.warning("the broker did not confirm leaving the shared group in %.0f s", within_s)
            return False
        log.info("left the shared group; draining what the broker already sent")
        return True

    async def round_trip(self, *, within_s: float) -> bool:
        """A fence: True once the broker answered a packet sent now, so every message it
        had written to this connection before (and every ack sent before) was handled.
        The packet is an UNSUBSCRIBE of the shared filters, which this worker no longer
        holds after leave_group: harmless, and answered in order."""
        return await self.session.unsubscribe(self._shared, within_s=within_s)

    def ack_many(self, packet_ids: list[int]) -> None:
        self.session.ack_many(packet_ids)

    async def run(self, stop: asyncio.Event) -> None:
        await self.session.run(stop)

    async def disconnect(self, *, within_s: float = 5.0) -> None:
        await self.session.disconnect(within_s=within_s)
