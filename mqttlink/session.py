"""One MQTT 5 connection of a subscriber that acknowledges by hand, on asyncio, over the
sans-IO codec of mqttlink/codec.py.

The caller gets each PUBLISH in a callback and acknowledges when its work is committed
(``ack_many``); nothing is acknowledged on receipt. The session reconnects with jittered
backoff and keeps the persistent session at the broker (clean start off), so what was not
acknowledged is delivered again on the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from mqttlink.backoff import Backoff
from mqttlink.codec import (
    DEFAULT_MAX_PACKET_BYTES,
    PINGREQ_PACKET,
    ConnAck,
    ControlPacket,
    Disconnect,
    PacketReader,
    ProtocolError,
    PublishHandler,
    SubAck,
    Subscription,
    UnsubAck,
    connect_packet,
    disconnect_packet,
    puback_packets,
    subscribe_packet,
    unsubscribe_packet,
)

log = logging.getLogger("mqttlink.session")

CONNECT_TIMEOUT_S: Final = 10.0
#: Reason codes of 0x80 and above are failures (MQTT 5.0, 2.4).
FAILURE: Final = 0x80


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 60
    session_expiry_s: int = 0
    receive_maximum: int = 65_535
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def connect_packet(self) -> bytes:
        return connect_packet(
            client_id=self.client_id,
            username=self.username,
            password=self.password,
            keepalive_s=self.keepalive_s,
            session_expiry_s=self.session_expiry_s,
            receive_maximum=self.receive_maximum,
            max_packet_bytes=self.max_packet_bytes,
        )


class _Connection(asyncio.Protocol):
    """asyncio's side of one TCP connection: bytes to the reader, packets to the session."""

    def __init__(self, session: ManualAckSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.reader = PacketReader(
            on_publish=session.on_publish,
            on_control=session.on_control,
            max_packet_bytes=session.options.max_packet_bytes,
        )
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.session.last_read = time.monotonic()
        try:
            self.reader.feed(data)
        except ProtocolError as exc:
            log.error("%s: closing the connection: %s", self.session.name, exc)
            self.abort()
            return
        except Exception:  # the callback's own fault: the unacked rest is delivered again
            log.exception("%s: a PUBLISH handler failed; reconnecting", self.session.name)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.session.last_write = time.monotonic()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ManualAckSession:
    """Keeps one connection up and hands its messages to ``on_publish``.

    ``generation`` counts successful connections: packet ids are only meaningful on the
    connection that delivered them, so the caller acks only messages of the current
    generation (the broker redelivers the others). ``on_connected`` runs after each
    CONNACK, before any message of that connection is handled: subscribe there."""

    def __init__(
        self,
        options: ConnectOptions,
        *,
        name: str,
        on_publish: PublishHandler,
        on_connected: Callable[[ConnAck], None],
        backoff: Backoff,
    ) -> None:
        self.options = options
        self.name = name
        self.on_publish = on_publish
        self._on_connected = on_connected
        self._backoff = backoff
        self.generation = 0
        self.connected = asyncio.Event()
        self.last_read = self.last_write = 0.0
        self._connection: _Connection | None = None
        self._connack: asyncio.Future[ConnAck] | None = None
        self._replies: dict[int, asyncio.Future[SubAck | UnsubAck]] = {}
        self._next_packet_id = 0

    # --- packets from the broker ------------------------------------------------------

    def on_control(self, packet: ControlPacket) -> None:
        if isinstance(packet, ConnAck):
            if self._connack is None or self._connack.done():
                raise ProtocolError("a CONNACK out of turn")
            if packet.reason_code < FAILURE:
                # At once, not after an await: the messages behind the CONNACK may be in
                # the same read, and belong to this generation.
                self.generation += 1
                self.connected.set()
                self.last_read = self.last_write = time.monotonic()
                self._on_connected(packet)
            self._connack.set_result(packet)
        elif isinstance(packet, SubAck | UnsubAck):
            waiter = self._replies.pop(packet.packet_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(packet)
            if isinstance(packet, SubAck) and any(c >= FAILURE for c in packet.reason_codes):
                log.error("%s: the broker refused a subscription: %s", self.name, packet)
        elif isinstance(packet, Disconnect):
            level = logging.INFO if packet.reason_code < FAILURE else logging.WARNING
            log.log(level, "%s: the broker disconnects: %s", self.name, packet)

    # --- requests ---------------------------------------------------------------------

    def _packet_id(self) -> int:
        self._next_packet_id = self._next_packet_id % 0xFFFF + 1
        return self._next_packet_id

    def _request(self, build: Callable[[int], bytes]) -> asyncio.Future[SubAck | UnsubAck]:
        waiter: asyncio.Future[SubAck | UnsubAck] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_observe)  # a subscribe nobody awaits may fail unseen
        if self._connection is None or not self.connected.is_set():
            waiter.set_exception(ConnectionError("not connected"))
            return waiter
        packet_id = self._packet_id()
        self._replies[packet_id] = waiter
        self._connection.write(build(packet_id))
        return waiter

    def subscribe(
        self, subscriptions: Sequence[Subscription], *, subscription_id: int | None = None
    ) -> asyncio.Future[SubAck | UnsubAck]:
        return self._request(
            lambda pid: subscribe_packet(pid, subscriptions, subscription_id=subscription_id)
        )

    def unsubscribe_soon(self, topic_filters: Sequence[str]) -> asyncio.Future[SubAck | UnsubAck]:
        return self._request(lambda pid: unsubscribe_packet(pid, topic_filters))

    async def unsubscribe(self, topic_filters: Sequence[str], *, within_s: float) -> bool:
        """True once the broker confirmed (an UNSUBACK, in order after everything sent
        before it); False if not connected or no answer in time."""
        waiter = self.unsubscribe_soon(topic_filters)
        try:
            await asyncio.wait_for(waiter, within_s)
        except (TimeoutError, ConnectionError):
            return False
        return True

    def ack_many(self, packet_ids: Sequence[int]) -> None:
        """PUBACK each packet id of the current connection, in order, as one write."""
        if packet_ids and self._connection is not None:
            self._connection.write(puback_packets(packet_ids))

    # --- the connection ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stay connected and reconnect until ``stop`` is set."""
        while not stop.is_set():
            failure = await self._connect()
            if failure is None:
                self._backoff.reset()
                await self._stay_until_lost(stop)
                self._drop()
                if stop.is_set():
                    return
                failure = "the connection was lost"
            delay = self._backoff.next_delay()
            log.warning(
                "%s: broker %s: %s; retrying in %.1f s", self.name, self.options.url, failure, delay
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _connect(self) -> str | None:
        """None once connected, else why not."""
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self), self.options.host, self.options.port
                ),
                CONNECT_TIMEOUT_S,
            )
            self._connection = connection
            connection.write(self.options.connect_packet())
            done, _ = await asyncio.wait(
                [self._connack, connection.closed],
                timeout=CONNECT_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except (OSError, TimeoutError) as exc:
            self._drop()
            return f"unreachable ({exc or type(exc).__name__})"
        if self._connack not in done:
            self._drop()
            return "no CONNACK" if not done else "closed the connection during CONNECT"
        connack = self._connack.result()
        if connack.reason_code >= FAILURE:
            self._drop()
            return f"refused the connection: {connack.reason}"
        return None

    async def _stay_until_lost(self, stop: asyncio.Event) -> None:
        """Until stop or a lost connection; pings when nothing was written for half the
        keepalive and gives up on a broker silent for one and a half."""
        connection = self._connection
        assert connection is not None
        keepalive = self.options.keepalive_s
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set() and not connection.closed.done():
                await asyncio.wait([stopping, connection.closed], timeout=1.0)
                now = time.monotonic()
                if keepalive and now - self.last_write >= keepalive / 2:
                    connection.write(PINGREQ_PACKET)
                if keepalive and now - self.last_read > keepalive * 1.5:
                    log.warning(
                        "%s: no packet from the broker in %.0f s", self.name, keepalive * 1.5
                    )
                    connection.abort()
        finally:
            stopping.cancel()

    def _drop(self) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        for waiter in self._replies.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection lost"))
        self._replies.clear()
        if self._connection is not None:
            self._connection.abort()
            self._connection = None
        if was_connected:
            log.info("%s: disconnected from %s", self.name, self.options.url)

    async def disconnect(self, *, within_s: float = 5.0) -> None:
        """DISCONNECT after every queued ack; the session stays at the broker."""
        connection = self._connection
        if connection is None or connection.transport is None:
            return
        connection.write(disconnect_packet())
        connection.transport.close()  # after the buffered writes
        try:
            await asyncio.wait_for(asyncio.shield(connection.closed), within_s)
        except TimeoutError:
            log.warning("%s: the connection did not close within %.0f s", self.name, within_s)
        self._drop()


def _observe(future: asyncio.Future[SubAck | UnsubAck]) -> None:
    if not future.cancelled():
        future.exception()
