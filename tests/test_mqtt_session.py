"""mqttlink.session against a real Mosquitto: a message is acknowledged only when the caller
says so, and everything not acknowledged comes back on the next connection of the session."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from mqttlink import Backoff
from mqttlink.codec import ConnAck, Subscription
from mqttlink.session import ConnectOptions, ManualAckSession
from tests.ingest_harness import mosquitto_pub
from tests.services import Services

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, int, int, int]] = []  # payload, id, qos, generation
        self.connacks: list[ConnAck] = []
        self._changed = asyncio.Event()

    async def reach(self, count: int, within_s: float = 30.0) -> None:
        async with asyncio.timeout(within_s):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()

    def note(self) -> None:
        self._changed.set()


@contextlib.asynccontextmanager
async def running_session(
    services: Services, *, client_id: str, topic: str, password: str | None = None
) -> AsyncIterator[tuple[ManualAckSession, Inbox]]:
    credentials = services.credentials("ingest")
    inbox = Inbox()
    session: ManualAckSession

    def on_publish(_topic: bytes, payload: bytes, packet_id: int, qos: int, _ids: object) -> None:
        inbox.messages.append((payload, packet_id, qos, session.generation))
        inbox.note()

    def on_connected(connack: ConnAck) -> None:
        inbox.connacks.append(connack)
        session.subscribe([Subscription(topic, qos=1)])

    session = ManualAckSession(
        ConnectOptions(
            host=services.mosquitto.host,
            port=services.mosquitto.port,
            client_id=client_id,
            username=credentials.username,
            password=credentials.password if password is None else password,
            keepalive_s=10,
            session_expiry_s=600,
        ),
        name="test",
        on_publish=on_publish,
        on_connected=on_connected,
        backoff=Backoff(base_s=0.05, cap_s=0.2),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(session.run(stop))
    try:
        yield session, inbox
    finally:
        await session.disconnect()
        stop.set()
        await asyncio.wait_for(task, 30)


async def publish(services: Services, topic: str, payloads: list[bytes]) -> None:
    for payload in payloads:
        await asyncio.to_thread(mosquitto_pub, services, topic, payload)


async def test_what_was_not_acknowledged_comes_back_and_nothing_else(services: Services) -> None:
    unique = uuid.uuid4().hex[:8]
    topic, client_id = f"fleet/vehicles/s{unique}/location", f"session-{unique}"
    payloads = [f"m{i}".encode() for i in range(10)]
    async with running_session(services, client_id=client_id, topic=topic) as (session, inbox):
        await asyncio.wait_for(session.connected.wait(), 30)
        await session.unsubscribe(["fleet/nothing"], within_s=10)  # the SUBSCRIBE is done
        await publish(services, topic, payloads)
        await inbox.reach(10)
        assert [m[0] for m in inbox.messages] == payloads
        assert {m[2] for m in inbox.messages} == {1}
        session.ack_many([packet_id for _, packet_id, _, _ in inbox.messages[:4]])
        assert await session.unsubscribe(["fleet/nothing"], within_s=10)  # acks are in
        assert not inbox.connacks[0].session_present
    async with running_session(services, client_id=client_id, topic=topic) as (session, inbox):
        await inbox.reach(6)
        assert inbox.connacks[0].session_present
        session.ack_many([packet_id for _, packet_id, _, _ in inbox.messages])
        assert await session.unsubscribe(["fleet/nothing"], within_s=10)
        assert [m[0] for m in inbox.messages] == payloads[4:]
    async with running_session(services, client_id=client_id, topic=topic) as (session, inbox):
        await asyncio.wait_for(session.connected.wait(), 30)
        assert await session.unsubscribe(["fleet/nothing"], within_s=10)
        assert inbox.messages == []


async def test_a_refused_login_is_retried_and_never_counts_as_connected(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    unique = uuid.uuid4().hex[:8]
    async with running_session(
        services, client_id=f"refused-{unique}", topic="fleet/x", password="wrong"
    ) as (session, inbox):
        async with asyncio.timeout(30):
            # The log is what an operator sees; nothing else signals a refusal.
            while caplog.text.count("refused the connection") < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert not session.connected.is_set()
        assert session.generation == 0
        assert inbox.connacks == []
