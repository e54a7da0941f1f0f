"""Load mode: distinct fixes from K couriers at a total rate, as fast as asked, no realism.
Each courier is its own MQTT connection; outstanding QoS 1 publishes are capped per
connection, so paho's 16-bit message ids can never wrap onto a message still in flight."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, replace

import aiomqtt

from broker.accounts import load_service_credentials
from config import Settings
from sim.geo import BERLIN

MAX_IN_FLIGHT_PER_CONNECTION = 500


@dataclass(frozen=True, slots=True)
class LoadOptions:
    couriers: int
    rate: float
    count: int
    seed: int
    username: str | None = None
    password: str | None = None


def fix_payload(index: int, *, base_ts: float, rng: random.Random) -> bytes:
    point = BERLIN.random_point(rng)
    return json.dumps(
        {
            "lat": round(point.lat, 6),
            "lon": round(point.lon, 6),
            "ts": round(base_ts + index * 0.001, 3),
            "speed": round(rng.uniform(0, 9), 2),
            "accuracy": 5,
        }
    ).encode()


async def _courier(
    settings: Settings,
    options: LoadOptions,
    courier: int,
    shares: list[int],
    stop: asyncio.Event,
    sent: list[int],
) -> None:
    rng = random.Random(options.seed * 100_003 + courier)
    per_second = options.rate / options.couriers if options.rate > 0 else 0.0
    base_ts = time.time() - 3600 + courier
    topic = f"{settings.topic_prefix}/couriers/load-{options.seed}-{courier}/location"
    window = asyncio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)
    async with (
        aiomqtt.Client(
            settings.mqtt_host,
            settings.mqtt_port,
            identifier=f"sim-load-{options.seed}-{courier}",
            username=options.username,
            password=options.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            max_concurrent_outgoing_calls=MAX_IN_FLIGHT_PER_CONNECTION,
        ) as client,
        asyncio.TaskGroup() as group,
    ):
        started = time.monotonic()

        async def publish(payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1)
                sent[0] += 1
            finally:
                window.release()

        for index in range(shares[courier]):
            if stop.is_set():
                break
            if per_second:
                delay = started + index / per_second - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            group.create_task(publish(fix_payload(index, base_ts=base_ts, rng=rng)))


async def run_load(settings: Settings, options: LoadOptions, *, stop: asyncio.Event) -> int:
    if options.username is None:
        # The local stack's `loadgen` account may publish as any device.
        account = load_service_credentials(settings.data_dir, "loadgen")
        options = replace(options, username=account.username, password=account.password)
    couriers = max(1, options.couriers)
    shares = [
        options.count // couriers + (1 if i < options.count % couriers else 0)
        for i in range(couriers)
    ]
    sent = [0]
    started = time.monotonic()

    async def progress() -> None:
        while True:
            await asyncio.sleep(2)
            elapsed = time.monotonic() - started
            print(
                f"[sim] load: {sent[0]:,}/{options.count:,} acknowledged,"
                f" {sent[0] / elapsed:,.0f} msg/s",
                flush=True,
            )

    reporter = asyncio.create_task(progress(), name="progress")
    try:
        async with asyncio.TaskGroup() as group:
            for courier in range(couriers):
                group.create_task(
                    _courier(settings, options, courier, shares, stop, sent),
                    name=f"load-courier-{courier}",
                )
    finally:
        reporter.cancel()
    elapsed = time.monotonic() - started
    print(
        f"[sim] load: done, {sent[0]:,} fixes acknowledged by the broker in {elapsed:.1f} s "
        f"({sent[0] / elapsed:,.0f} msg/s)",
        flush=True,
    )
    return 0 if sent[0] == options.count else 1
