"""No position of a courier reaches a customer's or restaurant's `order:` socket once the
order is delivered or cancelled, however the announcement and the fixes race.

The whole path is real: the phone's reports go through ingest's inbox, the API's applier and
its outbox relay; the fixes go straight from the broker to the bridge; the ETA refresh
announces with server times meanwhile, while the phone's clock is 30 s behind.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from auth import LocalSigner
from tests.api_harness import ApiProcess
from tests.bridge_support import BridgeProcess, Frame, connected, running_bridge, seed_order
from tests.ingest_harness import Worker, running_worker
from tests.mqtt5 import ACCEPTED, connected_as
from tests.services import Services

REPEATS = 20
PHONE_CLOCK_BEHIND_S = 30.0


@pytest.fixture(scope="module")
def stack(services: Services) -> Iterator[tuple[Worker, ApiProcess, BridgeProcess]]:
    with running_worker(services, group=f"privacy-{uuid.uuid4().hex[:6]}") as worker:
        api = ApiProcess(services, extra_env={"FLEETPULSE_ETA_INTERVAL_S": "0.5"}).start()
        try:
            with running_bridge(services) as bridge:
                yield worker, api, bridge
        finally:
            api.close()


class Phone:
    """A courier's phone: a fix every 100 ms on its own thread, reports on demand."""

    def __init__(self, services: Services, courier_id: str) -> None:
        self.client = connected_as(services, "loadgen")
        self.courier_id = courier_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stream, name=f"fixes-{courier_id}")
        self._thread.start()

    def _stream(self) -> None:
        topic = f"fleet/couriers/{self.courier_id}/location"
        step = 0
        while not self._stop.wait(0.1):
            step += 1
            fix = {"lat": 52.5 + step * 1e-5, "lon": 13.4, "ts": time.time()}
            self.client.client.publish(topic, json.dumps(fix), qos=0)

    def report(self, order_id: str, status: str) -> None:
        topic = f"fleet/couriers/{self.courier_id}/deliveries/{order_id}/status"
        body = {"status": status, "ts": time.time() - PHONE_CLOCK_BEHIND_S}
        assert self.client.publish(topic, json.dumps(body)) in ACCEPTED

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()


def positions_after_the_end(frames: list[Frame], courier_id: str, final: str) -> int:
    ended = next(i for i, f in enumerate(frames) if f["type"] == "status" and f["status"] == final)
    return sum(
        1
        for f in frames[ended + 1 :]
        if f["type"] in ("location", "locations") and courier_id in json.dumps(f)
    )


async def one_delivery(
    services: Services,
    bridge: BridgeProcess,
    db: psycopg.Connection[Any],
    *,
    final: str,
    api: ApiProcess,
) -> tuple[int, int]:
    """Deliver (reported by the phone) or cancel (through the API) one order while its
    courier streams fixes; (positions before the end, positions after it) over both
    sockets."""
    unique = uuid.uuid4().hex[:8]
    order_id, courier_id = f"o-{unique}", f"c-{unique}"
    restaurant_id, customer_uid = f"r-{unique}", f"cust-{unique}"
    seed_order(
        db,
        order_id=order_id,
        restaurant_id=restaurant_id,
        customer_uid=customer_uid,
        courier_id=courier_id,
        status="assigned",
    )
    customer = await connected(bridge, "customer", customer_uid)
    restaurant = await connected(bridge, "restaurant", f"u-{unique}", restaurant_id=restaurant_id)
    sockets = (customer, restaurant)
    for socket in sockets:
        await socket.subscribe(f"order:{order_id}")
    phone = Phone(services, courier_id)
    try:
        for socket in sockets:
            await socket.expect(
                lambda f: f["type"] == "location" and f.get("id") == courier_id, within=20
            )
        if final == "delivered":
            for status in ("picked_up", "out_for_delivery", "delivered"):
                await asyncio.to_thread(phone.report, order_id, status)
        else:
            token = LocalSigner.from_data_dir(services.root).issue(uid="ops", role="admin")
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api.port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as http:
                response = await http.post(f"/orders/{order_id}/status", json={"status": final})
                assert response.status_code == 200, response.text
        for socket in sockets:
            await socket.expect(lambda f: f["type"] == "status" and f["status"] == final, within=30)
        for socket in sockets:  # the phone keeps streaming meanwhile
            await socket.drain(1.0)
    finally:
        phone.close()
        for socket in sockets:
            await socket.close()
    before = sum(
        1 for s in sockets for f in s.frames if f["type"] == "location" and f["id"] == courier_id
    )
    after = sum(positions_after_the_end(s.frames, courier_id, final) for s in sockets)
    return before, after


async def deliveries(
    services: Services, bridge: BridgeProcess, api: ApiProcess, final: str
) -> list[tuple[int, int]]:
    with psycopg.connect(services.dsn, autocommit=True) as db:
        return [
            await one_delivery(services, bridge, db, final=final, api=api) for _ in range(REPEATS)
        ]


@pytest.mark.parametrize("final", ["delivered", "cancelled"])
def test_no_position_after_the_order_ends(
    services: Services, stack: tuple[Worker, ApiProcess, BridgeProcess], final: str
) -> None:
    _, api, bridge = stack
    results = asyncio.run(deliveries(services, bridge, api, final))
    assert all(before >= 2 for before, _ in results), results  # the stream did flow
    assert [after for _, after in results] == [0] * REPEATS
