"""paho-mqtt 2 driven by the asyncio loop: MQTT 5, persistent session, manual acks.

One thread does everything: paho reads and writes when asyncio says its socket is ready,
so `on_message` and `ack` never race with the batch writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK, PUBLISH
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.accounts import process_credentials
from config import Settings
from mqttlink import Backoff
from protocol import ingest_filters, shared_subscription

log = logging.getLogger("ingest.mqtt")

READ_CHUNK = 256 * 1024

# (topic, payload, packet id, qos); topic may be bytes that are not UTF-8.
MessageHandler = Callable[[str | bytes, bytes, int, int], None]
PUBACK_HEADER = struct.Struct("!BBH")
#: Marks the standby subscription a clean stop leaves in the session (see leave_group).
STANDBY_SUBSCRIPTION_ID = 1
SUBSCRIPTION_IDENTIFIER = 0x0B  # the MQTT 5 property id
#: The property block of a message that only the standby subscription matched.
STANDBY_ONLY_PROPERTIES = bytes([2, SUBSCRIPTION_IDENTIFIER, STANDBY_SUBSCRIPTION_ID])
UINT16 = struct.Struct("!H")


class IngestClient(mqtt.Client):
    """paho's Client with a lean receive path for the one thing ingest does at 20k msg/s.

    - PUBLISH packets without MQTT 5 properties (the broker adds none unless asked) are
      parsed here and handed to ``on_publish_packet`` directly: paho's generic path builds
      a Properties object and an MQTTMessage per message, over a third of the CPU time.
      Anything else (properties present, QoS 2) takes paho's normal path.
    - Socket reads are buffered: paho reads a packet with three or more recv() calls;
      ``drain_publishes`` then handles the complete PUBLISH packets in the buffer at once.
    - ``ack_many`` queues all PUBACKs of a batch as one write.
    Relies on paho 2.x internals (``_in_packet``, ``_sock_recv``, ``_packet_queue``);
    pyproject pins paho-mqtt <3 and tests/test_ingest.py exercises every path.
    """

    on_publish_packet: MessageHandler | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = b""
        self._read_pos = 0
        #: Set while a clean stop leaves the group: standby-identified messages are skipped
        #: (left unacknowledged in the session), see MqttLink.leave_group.
        self.holding_standby = False

    def reset_read_buffer(self) -> None:
        self._read_buffer, self._read_pos = b"", 0

    def has_buffered_input(self) -> bool:
        return self._read_pos < len(self._read_buffer)

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_pos >= len(self._read_buffer):
            data = super()._sock_recv(READ_CHUNK)
            if not data:
                return data
            self._read_buffer, self._read_pos = data, 0
        start = self._read_pos
        chunk = self._read_buffer[start : start + bufsize]
        self._read_pos = start + len(chunk)
        return chunk

    def _handle_publish(self) -> MQTTErrorCode:
        handler = self.on_publish_packet
        command: int = self._in_packet["command"]
        qos = (command & 0x06) >> 1
        if handler is None or qos == 2 or self._protocol != mqtt.MQTTv5:
            return super()._handle_publish()
        packet: bytearray = self._in_packet["packet"]
        (topic_length,) = struct.unpack_from("!H", packet, 0)
        pos = 2 + topic_length
        topic = bytes(packet[2:pos])
        mid = 0
        if qos:
            (mid,) = struct.unpack_from("!H", packet, pos)
            pos += 2
        if packet[pos] == 0:
            payload_at = pos + 1
        else:
            ids_only = subscription_ids_only(packet, pos, len(packet))
            if ids_only is None:  # other properties: let paho decode them
                return super()._handle_publish()
            payload_at, standby = ids_only
            if standby and self.holding_standby:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        payload = bytes(packet[payload_at:])
        try:
            text: str | bytes = topic.decode()
        except UnicodeDecodeError:
            text = topic
        handler(text, payload, mid, qos)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def drain_publishes(self) -> bool:
        """Handle the complete property-less QoS 0/1 PUBLISH packets at the head of the read
        buffer without going through paho's per-packet reader; False if there were none
        (the next packet is incomplete, not a PUBLISH, or paho is in the middle of one)."""
        handler = self.on_publish_packet
        if handler is None or self._in_packet["command"] != 0 or self._protocol != mqtt.MQTTv5:
            return False
        buf, pos = self._read_buffer, self._read_pos
        start, end = pos, len(buf)
        unpack = UINT16.unpack_from
        while pos < end:
            command = buf[pos]
            if command & 0xF0 != PUBLISH or command & 0x06 == 0x04:
                break
            length, p = _varint(buf, pos + 1, end)
            if length is None:
                break  # remaining length incomplete (or malformed: paho will say so)
            packet_end = p + length
            if packet_end > end or length < 3:
                break
            (topic_length,) = unpack(buf, p)
            q = p + 2 + topic_length
            mid = 0
            if command & 0x06:
                (mid,) = unpack(buf, q)
                q += 2
            if q >= packet_end:
                break
            if buf[q] == 0:
                payload_at = q + 1
            elif buf[q : q + 3] == STANDBY_ONLY_PROPERTIES:  # a standby backlog: keep it fast
                if self.holding_standby:
                    pos = packet_end
                    continue
                payload_at = q + 3
            else:
                ids_only = subscription_ids_only(buf, q, packet_end)
                if ids_only is None:
                    break  # other MQTT 5 properties: paho's full path decodes them
                payload_at, standby = ids_only
                if standby and self.holding_standby:
                    pos = packet_end
                    continue
            topic = buf[p + 2 : p + 2 + topic_length]
            try:
                text: str | bytes = topic.decode()
            except UnicodeDecodeError:
                text = topic
            handler(text, buf[payload_at:packet_end], mid, (command >> 1) & 3)
            pos = packet_end
        if pos == start:
            return False
        self._read_pos = pos
        self._last_bytes_received = time.monotonic()
        return True

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK every packet id, in order, as one queued write."""
        if mids:
            pack = PUBACK_HEADER.pack
            blob = b"".join([pack(PUBACK, 2, mid) for mid in mids])
            self._packet_queue(PUBACK, blob, 0, 1)


def subscription_ids_only(packet: bytes | bytearray, at: int, end: int) -> tuple[int, bool] | None:
    """A PUBLISH property block at ``at`` that holds only Subscription Identifiers (what
    Mosquitto adds for a subscription made with one): (where the payload starts, whether
    STANDBY_SUBSCRIPTION_ID is among them). None for any other property, or a block that
    does not fit before ``end``: paho's full path decodes those."""
    length, pos = _varint(packet, at, end)
    if length is None:
        return None
    block_end = pos + length
    if block_end > end:
        return None
    standby = False
    while pos < block_end:
        if packet[pos] != SUBSCRIPTION_IDENTIFIER:
            return None
        value, pos = _varint(packet, pos + 1, block_end)
        if value is None:
            return None
        standby = standby or value == STANDBY_SUBSCRIPTION_ID
    return block_end, standby


def _varint(packet: bytes | bytearray, at: int, end: int) -> tuple[int | None, int]:
    """An MQTT variable byte integer at ``at``: (value, position after it); value None if it
    runs past ``end`` or beyond four bytes."""
    value, shift, pos = 0, 0, at
    while pos < end and shift <= 21:
        byte = packet[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos
    return None, pos


def default_client_id() -> str:
    """Stable across restarts, so the broker's persistent session is found again."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"fleetpulse-ingest-{host}"[:64]


def build_client(settings: Settings, *, client_id: str) -> IngestClient:
    """The one place an ingest MQTT client is constructed (account, TLS, protocol)."""
    client = IngestClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
    )
    # The broker refuses anonymous clients: FLEETPULSE_MQTT_USERNAME/PASSWORD, or the local
    # stack's ingest account from its secrets file.
    credentials = process_credentials(settings, account="ingest")
    client.username_pw_set(credentials.username, credentials.password)
    return client


class MqttLink:
    """Keeps one MQTT connection up (reconnecting with jittered backoff) and subscribed.

    ``generation`` counts successful connections: packet ids of a message are only
    meaningful on the connection that delivered it, so acks for older generations are
    skipped (the broker redelivers those messages; storage deduplicates them)."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_message: MessageHandler,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id or settings.ingest_client_id or default_client_id()
        self.client = build_client(settings, client_id=self.client_id)
        self.generation = 0
        self.connected = asyncio.Event()
        self._on_message = on_message
        self._lost = asyncio.Event()
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._unsubacks: dict[int, asyncio.Future[None]] = {}
        self._topics: list[str] = []
        self._standby: list[str] = []
        #: Set once this worker left the shared group: a reconnect does not rejoin it.
        self.left_group = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._wire_callbacks()

    # --- paho callbacks (all run inside the asyncio thread) ---------------------------

    def _wire_callbacks(self) -> None:
        client = self.client
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_unsubscribe = self._handle_unsubscribe
        client.on_publish_packet = self._on_message
        client.on_message = self._handle_message
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write

    def _handle_message(
        self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        """paho's full path: packets with properties (or QoS 2)."""
        if self.left_group and STANDBY_SUBSCRIPTION_ID in _subscription_ids(message):
            # Published after this worker left: it waits, unacknowledged, in the session
            # for this worker's return (or a restart of the last worker).
            return
        self._on_message(message._topic, bytes(message.payload), message.mid, message.qos)

    def _socket_open(self, _client: mqtt.Client, _userdata: object, sock: mqtt.SocketLike) -> None:
        assert self._loop is not None
        self._sock = sock  # type: ignore[assignment]
        self.client.reset_read_buffer()
        self._loop.add_reader(sock, self._readable)

    def _readable(self) -> None:
        client = self.client
        client.loop_read()
        while client.has_buffered_input() and self._sock is not None:
            if not client.drain_publishes():
                client.loop_read()

    def _socket_close(self, _client: mqtt.Client, _userdata: object, sock: mqtt.SocketLike) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._sock = None

    def _register_write(
        self, client: mqtt.Client, _userdata: object, sock: mqtt.SocketLike
    ) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, client.loop_write)

    def _unregister_write(
        self, _client: mqtt.Client, _userdata: object, sock: mqtt.SocketLike
    ) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _handle_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(reason)
        if reason.is_failure:
            return
        self.generation += 1
        options = SubscribeOptions(qos=1)
        group = self.settings.ingest_shared_group
        topics = [
            (shared_subscription(f, group=group), options)
            for f in ingest_filters(prefix=self.settings.topic_prefix)
        ]
        self._topics = [topic for topic, _ in topics]
        self._standby = list(ingest_filters(prefix=self.settings.topic_prefix))
        if not self.left_group:
            client.subscribe(topics)
            # Back in the group: drop the standby copy a clean stop left (what it queued
            # meanwhile is in the session already and still arrives).
            client.unsubscribe(self._standby)
        self.connected.set()
        log.info(
            "connected to %s as %s (session %s); subscribed to %s",
            self.settings.mqtt_url,
            self.client_id,
            "resumed" if flags.session_present else "new",
            ", ".join(t for t, _ in topics),
        )

    def _handle_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(reason)
        if self.connected.is_set():
            level = logging.INFO if reason.value == 0 else logging.WARNING
            log.log(level, "disconnected from the broker: %s", reason)
        self.connected.clear()
        self._lost.set()

    def _handle_unsubscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        _reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        waiter = self._unsubacks.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- public ---------------------------------------------------------------------

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
        self.client.holding_standby = True
        if not self.connected.is_set() or not self._topics:
            return False
        properties = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        properties.SubscriptionIdentifier = STANDBY_SUBSCRIPTION_ID
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        self.client.subscribe([(topic, options) for topic in self._standby], properties=properties)
        if not await self._unsubscribe(self._topics, within_s=within_s):
            log.warning("the broker did not confirm leaving the shared group in %.0f s", within_s)
            return False
        log.info("left the shared group; draining what the broker already sent")
        return True

    async def round_trip(self, *, within_s: float) -> bool:
        """A fence: True once the broker answered a packet sent now, so every message it
        had written to this connection before (and every ack sent before) was handled.
        The packet is an UNSUBSCRIBE of the shared filters, which this worker no longer
        holds after leave_group: harmless, and answered in order."""
        if not self.connected.is_set() or not self._topics:
            return False
        return await self._unsubscribe(self._topics, within_s=within_s)

    async def _unsubscribe(self, topics: list[str], *, within_s: float) -> bool:
        assert self._loop is not None
        result, mid = self.client.unsubscribe(topics)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return False
        waiter = self._loop.create_future()
        self._unsubacks[mid] = waiter
        try:
            await asyncio.wait_for(waiter, within_s)
        except TimeoutError:
            return False
        finally:
            self._unsubacks.pop(mid, None)
        return True

    def ack_many(self, mids: list[int]) -> None:
        self.client.ack_many(mids)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stay connected and reconnect until ``stop`` is set."""
        self._loop = asyncio.get_running_loop()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.ingest_session_expiry_s
        properties.ReceiveMaximum = self.settings.ingest_receive_maximum
        # Stores host, port and options; every attempt below is a reconnect().
        self.client.connect_async(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            keepalive=self.settings.ingest_keepalive_s,
            clean_start=False,
            properties=properties,
        )
        backoff = Backoff(base_s=0.1, cap_s=self.settings.ingest_retry_max_s)
        while not stop.is_set():
            self._lost.clear()
            self._connack = self._loop.create_future()
            try:
                self.client.reconnect()
                reason = await asyncio.wait_for(asyncio.shield(self._connack), 10)
            except (OSError, TimeoutError) as exc:
                self._drop_socket()
                delay = backoff.next_delay()
                log.warning(
                    "broker %s unreachable (%s); retrying in %.1f s",
                    self.settings.mqtt_url,
                    exc or type(exc).__name__,
                    delay,
                )
                await _sleep_unless(stop, delay)
                continue
            if reason.is_failure:
                self._drop_socket()
                delay = backoff.next_delay()
                log.error("broker refused the connection: %s; retrying in %.1f s", reason, delay)
                await _sleep_unless(stop, delay)
                continue
            backoff.reset()
            while not stop.is_set() and not self._lost.is_set():
                self.client.loop_misc()
                await _wait_any(stop, self._lost, within_s=1.0)
            if self._lost.is_set() and not stop.is_set():
                self._drop_socket()
                delay = backoff.next_delay()
                log.info("reconnecting in %.1f s", delay)
                await _sleep_unless(stop, delay)

    def _drop_socket(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._loop.remove_writer(self._sock)
        self._sock = None

    async def disconnect(self, *, within_s: float = 5.0) -> None:
        """Send DISCONNECT after every queued ack; the session stays at the broker."""
        if not self.connected.is_set():
            return
        self.client.disconnect()
        try:
            await asyncio.wait_for(self._lost.wait(), within_s)
        except TimeoutError:
            log.warning("the broker did not close the connection within %.0f s", within_s)


def _subscription_ids(message: mqtt.MQTTMessage) -> list[int]:
    properties = message.properties
    ids = getattr(properties, "SubscriptionIdentifier", None) if properties else None
    if ids is None:
        return []
    return list(ids) if isinstance(ids, list) else [ids]


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


async def _wait_any(*events: asyncio.Event, within_s: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
