"""The one reconnect loop of an aiomqtt session: connect, run the session, and on a lost or
refused connection wait a jittered backoff and start again, until cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import aiomqtt

from mqttlink.backoff import Backoff

log = logging.getLogger("mqttlink")


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
            async with connect() as client:
                backoff.reset()
                await session(client)
                continue
        except aiomqtt.MqttError as exc:
            if on_lost is not None:
                on_lost(exc)
            delay = backoff.next_delay()
            log.warning("%s: MQTT unavailable (%s); reconnecting in %.1f s", name, exc, delay)
            await asyncio.sleep(delay)
