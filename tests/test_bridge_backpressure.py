"""Slow consumers: a stalled browser never holds up the relay or the others, positions are
coalesced, never-dropped events still arrive, and a client that cannot keep up is closed
with 4408.

The stall is driven directly: each client's sender writes through a gate the test holds
shut and then opens, so nothing depends on kernel buffer sizes or on the machine's speed.
One end-to-end test then checks, on a real bridge, that an alert reaches every admin
socket, including one that is not reading.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge.client import CLOSE_SLOW_CONSUMER, Client, ClientLimits, FleetBatch
from bridge.metrics import BridgeMetrics
from protocol.frames import Location, PongFrame
from tests.bridge_support import (
    BridgeProcess,
    WsClient,
    alert_message,
    apublish,
    connected,
    next_event_id,
    running_bridge,
)
from tests.services import Services

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Browser:
    """A client's far end: what its sender wrote, through a gate the test controls."""

    def __init__(self, *, stalled: bool) -> None:
        self.written: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        if not stalled:
            self.gate.set()

    async def send(self, frame: str) -> None:
        await self.gate.wait()
        self.written.append(json.loads(frame))


def metric(metrics: BridgeMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def settle(rounds: int = 50) -> None:
    """Let every runnable sender run until it blocks (a stalled gate, or nothing queued)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def position(courier: str, n: int) -> str:
    return json.dumps({"type": "location", "id": courier, "lat": 1.0, "lon": float(n)})


def spot(source: str, n: int) -> Location:
    """A vehicle's position for the firehose."""
    return Location("vehicle", source, 1.0, float(n), float(n), None, None)


def event(n: int) -> str:
    return json.dumps({"type": "emergency", "alert_id": n, "message": f"alarm {n}"})


@pytest.fixture
def metrics() -> BridgeMetrics:
    return BridgeMetrics(CollectorRegistry())


async def test_a_stalled_browser_coalesces_positions_and_holds_up_no_one(
    metrics: BridgeMetrics,
) -> None:
    stalled_end, reader_end = Browser(stalled=True), Browser(stalled=False)
    stalled = Client(send=stalled_end.send, metrics=metrics)
    reader = Client(send=reader_end.send, metrics=metrics)
    senders = [asyncio.create_task(c.run_sender()) for c in (stalled, reader)]
    try:
        couriers = [f"c{n}" for n in range(10)]
        for n in range(1000):  # the relay pushes to both without ever awaiting a socket
            courier = couriers[n % 10]
            for client in (stalled, reader):
                client.push_position(f"courier:{courier}", position(courier, n), 0.0)
            await settle(5)  # the reader keeps up, as a browser that reads does
        await settle()
        # The reader got every fix as it came; the stalled one holds one per source (the
        # first write it is blocked on, plus the newest of each of the ten couriers).
        assert len(reader_end.written) == 1000
        assert stalled.pending() == 10
        assert metric(metrics, "bridge_positions_coalesced_total") >= 1000 - 11
        stalled_end.gate.set()
        await settle()
        newest = {f["id"]: f["lon"] for f in stalled_end.written}
        assert newest == {f"c{n}": float(990 + n) for n in range(10)}
        assert len(stalled_end.written) <= 11
    finally:
        for task in senders:
            task.cancel()


async def test_never_dropped_events_go_out_before_positions(metrics: BridgeMetrics) -> None:
    end = Browser(stalled=True)
    client = Client(send=end.send, metrics=metrics)
    sender = asyncio.create_task(client.run_sender())
    try:
        client.push_position("courier:c1", position("c1", 0), 0.0)
        await settle()  # the sender is now blocked writing that position
        for n in range(3000):
            client.push_position(f"courier:f{n}", position(f"f{n}", n), 0.0)
        client.push_fleet(FleetBatch({"f1": spot("f1", 0)}, '{"type": "locations"}', 0.0))
        client.push_event(event(1), 0.0)
        client.push_control(PongFrame(id=7))
        end.gate.set()
        await settle()
        kinds = [f["type"] for f in end.written]
        assert kinds[:5] == ["location", "pong", "emergency", "locations", "location"]
        assert kinds.count("location") == 3001
    finally:
        sender.cancel()


async def test_a_client_that_cannot_keep_up_with_events_is_closed_with_4408(
    metrics: BridgeMetrics,
) -> None:
    limits = ClientLimits(event_queue=200)
    stalled_end, reader_end = Browser(stalled=True), Browser(stalled=False)
    stalled = Client(send=stalled_end.send, metrics=metrics, limits=limits)
    reader = Client(send=reader_end.send, metrics=metrics, limits=limits)
    aborted = asyncio.Event()
    stalled.set_abort(aborted.set)
    senders = [asyncio.create_task(c.run_sender()) for c in (stalled, reader)]
    try:
        count = 4000
        for n in range(count):
            for client in (stalled, reader):
                client.push_event(event(n), 0.0)
            if n % 50 == 49:
                await settle()
        await settle()
        # Every event reached the reader, in order; the stalled client was closed once.
        assert [f["alert_id"] for f in reader_end.written] == list(range(count))
        assert reader.close_code is None
        assert stalled.close_code == CLOSE_SLOW_CONSUMER
        assert aborted.is_set()
        assert metric(metrics, "bridge_closed_total", reason="slow_consumer") == 1
        assert metric(metrics, "bridge_dropped_total", reason="slow_consumer") >= 200
    finally:
        for task in senders:
            task.cancel()


async def test_firehose_batches_of_a_stalled_admin_merge_newest_per_source(
    metrics: BridgeMetrics,
) -> None:
    end = Browser(stalled=True)
    client = Client(send=end.send, metrics=metrics, limits=ClientLimits(fleet_backlog=3))
    client.push_control(PongFrame(id=0))
    sender = asyncio.create_task(client.run_sender())
    try:
        await settle()  # blocked on the pong
        for n in range(20):
            items = {f"s{k}": spot(f"s{k}", n) for k in range(5)}
            client.push_fleet(FleetBatch(items, json.dumps({"type": "locations"}), 0.0))
        assert client.pending() <= 3
        end.gate.set()
        await settle()
        assert next(f["type"] for f in end.written) == "pong"
        merged = [f for f in end.written if f["type"] == "locations" and "items" in f]
        assert merged
        # Each merged frame holds one item per source, the newest of the batches it merged.
        assert all(len(frame["items"]) == 5 for frame in merged)
        assert max(item["lon"] for item in merged[-1]["items"]) >= 17
        assert len(end.written) <= 1 + 3
    finally:
        sender.cancel()


@pytest.fixture(scope="module")
def bridge(services: Services) -> Iterator[BridgeProcess]:
    with running_bridge(services, bridge_event_queue="200") as running:
        yield running


async def test_an_alert_reaches_every_admin_socket_even_one_not_reading(
    bridge: BridgeProcess, unique: str
) -> None:
    services = bridge.services
    not_reading = await WsClient.open(bridge.url, small_receive_buffer=True)
    await not_reading.send({"type": "auth", "token": bridge.token("admin", f"quiet{unique}")})
    watching = await connected(bridge, "admin", f"watching{unique}")
    idle = await connected(bridge, "admin", f"idle{unique}")  # subscribed to nothing at all
    await watching.subscribe("fleet")
    courier = f"e{unique}"
    alert = alert_message(alert_id=next_event_id(), courier_id=courier, message=f"help {unique}")
    await apublish(services, f"fleet/alerts/{courier}", alert)

    def is_the_alert(frame: dict[str, Any]) -> bool:
        return bool(frame["type"] == "emergency" and frame["message"] == f"help {unique}")

    for admin in (watching, idle, not_reading):
        frame, _ = await admin.expect(is_the_alert, within=15)
        assert frame["courier_id"] == courier
    for client in (watching, idle, not_reading):
        await client.close()
