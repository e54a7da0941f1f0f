"""Runs simulated couriers and vehicles as real MQTT clients, one connection each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiomqtt

from mqttlink import Backoff, stay_connected
from sim.agents import Courier, Job, Message, Vehicle
from sim.geo import Point

log = logging.getLogger("sim.fleet")


@dataclass(frozen=True, slots=True)
class DeviceLogin:
    username: str
    password: str
    client_id: str | None = None


@dataclass
class FleetCounters:
    published: int = 0
    fixes: int = 0
    batches: int = 0
    assignments: int = 0
    reconnects: int = 0


def job_from_assignment(payload: bytes) -> tuple[str, Job | None]:
    """(`order_id`, job) from an assignment message; job is None for an unassignment.

    Accepts `{"order_id", "pickup": {"lat","lon"}, "dropoff": {"lat","lon"}}` and the same
    with flat `pickup_lat` ... keys; an `"action": "unassign"` (or type) withdraws the order."""
    body = json.loads(payload)
    order_id = str(body["order_id"])
    action = str(body.get("action") or body.get("type") or "assign")
    if "unassign" in action:
        return order_id, None

    def point(name: str) -> Point:
        nested = body.get(name)
        if isinstance(nested, Mapping):
            return Point(float(nested["lat"]), float(nested["lon"]))
        return Point(float(body[f"{name}_lat"]), float(body[f"{name}_lon"]))

    return order_id, Job(order_id, pickup=point("pickup"), dropoff=point("dropoff"))


async def _publish_all(
    client: aiomqtt.Client, messages: list[Message], counters: FleetCounters
) -> None:
    for message in messages:
        await client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        counters.published += 1
        counters.fixes += message.fixes
        counters.batches += message.fixes > 1


def device_client(
    device_id: str, *, host: str, port: int, login: DeviceLogin | None, will: Message | None = None
) -> aiomqtt.Client:
    """A device's MQTT 5 connection: its own credentials and client id, and its will."""
    return aiomqtt.Client(
        host,
        port,
        identifier=(login and login.client_id) or f"sim-{device_id}",
        username=login.username if login else None,
        password=login.password if login else None,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=aiomqtt.Will(will.topic, will.payload, qos=1, retain=True) if will else None,
        keepalive=30,
    )


async def stay_online(
    device_id: str,
    connect: Callable[[], aiomqtt.Client],
    session: Callable[[aiomqtt.Client], Awaitable[None]],
    counters: FleetCounters,
) -> None:
    """Runs `session` on a fresh connection until cancelled; reconnects with jittered backoff."""

    def lost(_exc: aiomqtt.MqttError) -> None:
        counters.reconnects += 1

    await stay_connected(
        name=device_id,
        connect=connect,
        session=session,
        backoff=Backoff(base_s=0.5, cap_s=30.0, rng=random.Random(device_id)),
        on_lost=lost,
    )


async def run_courier(
    courier: Courier,
    *,
    host: str,
    port: int,
    login: DeviceLogin | None,
    counters: FleetCounters,
    tick_s: float = 1.0,
    time_scale: float = 1.0,
) -> None:
    """Keeps one courier's phone online until cancelled."""

    def connect() -> aiomqtt.Client:
        will = courier.will(time.time())
        return device_client(courier.courier_id, host=host, port=port, login=login, will=will)

    async def session(client: aiomqtt.Client) -> None:
        await client.subscribe(courier.assignments_topic, qos=1)
        await _publish_all(client, [courier.presence(time.time(), "online")], counters)
        async with asyncio.TaskGroup() as group:
            group.create_task(_receive_assignments(client, courier, counters), name="assignments")
            group.create_task(_drive(client, courier, counters, tick_s, time_scale), name="drive")

    await stay_online(courier.courier_id, connect, session, counters)


async def _receive_assignments(
    client: aiomqtt.Client, courier: Courier, counters: FleetCounters
) -> None:
    async for message in client.messages:
        try:
            order_id, job = job_from_assignment(message.payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "courier %s: unreadable assignment %r: %s", courier.courier_id, message.payload, exc
            )
            continue
        counters.assignments += 1
        if job is None:
            courier.unassign(order_id)
        else:
            courier.assign(job)


async def _drive(
    client: aiomqtt.Client,
    courier: Courier,
    counters: FleetCounters,
    tick_s: float,
    time_scale: float,
) -> None:
    last = time.time()
    was_busy = courier.busy
    while True:
        await asyncio.sleep(tick_s)
        now = time.time()
        messages = courier.tick(now, (now - last) * time_scale)
        last = now
        if courier.busy != was_busy:
            was_busy = courier.busy
            messages.append(courier.presence(now, "busy" if was_busy else "online"))
        await _publish_all(client, messages, counters)


async def run_vehicle(
    vehicle: Vehicle,
    *,
    host: str,
    port: int,
    login: DeviceLogin | None,
    counters: FleetCounters,
    tick_s: float = 1.0,
    time_scale: float = 1.0,
) -> None:
    """Keeps one van's tracker online until cancelled."""

    def connect() -> aiomqtt.Client:
        return device_client(vehicle.vehicle_id, host=host, port=port, login=login)

    async def session(client: aiomqtt.Client) -> None:
        last = time.time()
        while True:
            await asyncio.sleep(tick_s)
            now = time.time()
            await _publish_all(client, vehicle.tick(now, (now - last) * time_scale), counters)
            last = now

    await stay_online(vehicle.vehicle_id, connect, session, counters)


async def go_offline(courier: Courier, *, host: str, port: int, login: DeviceLogin | None) -> None:
    """A clean sign-off publishes `offline` (the will only fires on an unclean loss)."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with device_client(courier.courier_id, host=host, port=port, login=login) as client:
            message = courier.will(time.time())
            await client.publish(message.topic, message.payload, qos=1, retain=True)
