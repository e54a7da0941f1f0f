"""mqttlink.stay_connected against a real Mosquitto: a refused login and a broker restart
are survived, each with the failure reported and the session run again."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable

import aiomqtt
import pytest

from broker.accounts import ServiceAccount
from mqttlink import Backoff, stay_connected
from tests.services import Services, running_services

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client(
    services: Services, account: ServiceAccount = "bridge", *, password: str | None = None
) -> aiomqtt.Client:
    credentials = services.credentials(account)
    return aiomqtt.Client(
        services.mosquitto.host,
        services.mosquitto.port,
        username=credentials.username,
        password=password if password is not None else credentials.password,
        timeout=5,
    )


class Counted:
    """A count that can be awaited to reach a number."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def add(self, *_: object) -> None:
        self.count += 1
        self._changed.set()

    async def reach(self, wanted: int, within_s: float = 30.0) -> None:
        async with asyncio.timeout(within_s):
            while self.count < wanted:
                self._changed.clear()
                await self._changed.wait()


async def cancelled(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def forever(_client: aiomqtt.Client) -> Awaitable[None]:
    return asyncio.sleep(3600)


async def test_a_refused_login_is_retried_with_backoff_and_reported(services: Services) -> None:
    failures = Counted()
    task = asyncio.create_task(
        stay_connected(
            name="refused",
            connect=lambda: client(services, password="wrong"),
            session=forever,
            backoff=Backoff(base_s=0.01, cap_s=0.05),
            on_lost=failures.add,
        )
    )
    try:
        await failures.reach(3)
    finally:
        await cancelled(task)


async def test_a_broker_restart_ends_the_session_and_a_new_one_starts() -> None:
    topic = f"fleet/couriers/m{uuid.uuid4().hex[:8]}/location"
    with running_services(migrate=False) as services:
        sessions, failures, received = Counted(), Counted(), Counted()

        async def session(connected: aiomqtt.Client) -> None:
            await connected.subscribe(topic, qos=1)
            sessions.add()
            async for _message in connected.messages:
                received.add()

        task = asyncio.create_task(
            stay_connected(
                name="restart",
                connect=lambda: client(services),
                session=session,
                backoff=Backoff(base_s=0.05, cap_s=0.2),
                on_lost=failures.add,
            )
        )
        try:
            await sessions.reach(1)
            await asyncio.to_thread(services.mosquitto.stop)
            await failures.reach(1)
            await asyncio.to_thread(services.mosquitto.start)
            await sessions.reach(2)
            # The new session is live: a fix published now reaches it.
            async with client(services, "loadgen") as publisher:
                await publisher.publish(topic, b'{"lat":1,"lon":2}', qos=1)
            await received.reach(1)
        finally:
            await cancelled(task)
