"""The one reconnect loop of an aiomqtt session: connect, run the session, and on a lost or
refused connection wait a jittered backoff and start again, until cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, NoReturn

import aiomqtt

from mqttlink.backoff import Backoff

log = logging.getLogger("mqttlink")

#: aiomqtt's exit waits without a bound for the broker to close the connection after its
#: DISCONNECT; a session cancelled on a loaded machine once hung there for 300 s.
EXIT_TIMEOUT_S: Final = 10.0


async def stay_connected(
    *,
    name: str,
    connect: Callable[[], aiomqtt.Client],
    session: Callable[[aiomqtt.Client], Awaitable[None]],
    backoff: Backoff,
    on_lost: Callable[[aiomqtt.MqttError], None] | None = None,
) -> NoReturn:
    """Run `session` on a fresh `connect()` for ever. The backoff restarts from its base
    after each successful connection; `on_lost` hears of every failure before the wait.
    A session that returns is run again on a new connection at once."""
    while True:
        try:
            async with _bounded_exit(connect()) as client:
                backoff.reset()
                await session(client)
                continue
        except aiomqtt.MqttError as exc:
            if on_lost is not None:
                on_lost(exc)
            delay = backoff.next_delay()
            log.warning("%s: MQTT unavailable (%s); reconnecting in %.1f s", name, exc, delay)
            await asyncio.sleep(delay)


@asynccontextmanager
async def _bounded_exit(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    """``async with client``, but leaving it (on success, error or cancellation) waits at
    most EXIT_TIMEOUT_S for the disconnect; the client is not reused after that."""
    await client.__aenter__()
    try:
        yield client
    except BaseException as exc:
        await _exit(client, exc)
        raise
    else:
        await _exit(client, None)


async def _exit(client: aiomqtt.Client, exc: BaseException | None) -> None:
    try:
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            await client.__aexit__(
                type(exc) if exc else None, exc, exc.__traceback__ if exc else None
            )
    except TimeoutError:
        log.warning("the broker did not close the connection within %.0f s", EXIT_TIMEOUT_S)
