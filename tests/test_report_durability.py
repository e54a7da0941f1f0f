"""Couriers' reports are applied at least once, and announced once, whatever dies when.

Everything is real and separate: Mosquitto, PostgreSQL, `python -m ingest` and
`python -m api` as child processes. Reports travel device -> ingest (inbox, PUBACK after
commit) -> the API's applier (workflow + outbox, one transaction) -> the outbox relay ->
`{prefix}/orders/{id}/status`. The test reads the outcome in the database and on MQTT.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from protocol.statuses import Status
from store import orders as store
from tests.api_harness import ApiProcess
from tests.ingest_harness import Worker, count_rows, running_worker, wait_until
from tests.mqtt5 import ACCEPTED, Mqtt5Client, connected_as
from tests.services import Services, running_services

WALK = ("picked_up", "out_for_delivery", "delivered")


@pytest.fixture(scope="module")
def own_services() -> Iterator[Services]:
    """Services of this module alone: no other test's API applies these reports."""
    with running_services() as started:
        yield started


@pytest.fixture(scope="module")
def ingest(own_services: Services) -> Iterator[Worker]:
    with running_worker(own_services, group="durability") as worker:
        yield worker


async def _store_orders(dsn: str, restaurant: str, courier: str, orders: list[str]) -> None:
    """The orders created and assigned with the API's own queries (store.orders)."""
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        for order in orders:
            await store.insert_order(
                conn,
                order_id=order,
                restaurant_id=restaurant,
                customer_uid="cust",
                pickup=(52.5, 13.4),
                dropoff=(52.52, 13.45),
                promised_at=now + timedelta(hours=1),
            )
            await store.open_assignment(conn, order, courier_id=courier, by="test", at=now)
            await store.set_courier(
                conn, order, courier_id=courier, status=Status.ASSIGNED, eta=None, at=now
            )


def make_orders(services: Services, unique: str, count: int) -> tuple[str, list[str]]:
    """`count` orders assigned to one courier, straight in the database."""
    courier, restaurant = f"c-{unique}", f"r-{unique}"
    orders = [f"o-{unique}-{i}" for i in range(count)]
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO restaurants (id, name, lat, lon) VALUES (%s, 'R', 52.5, 13.4)",
            (restaurant,),
        )
        conn.execute("INSERT INTO couriers (id, name) VALUES (%s, 'C')", (courier,))
    asyncio.run(_store_orders(services.dsn, restaurant, courier, orders))
    return courier, orders


def device(services: Services) -> Mqtt5Client:
    """Publishes as any device (the local `loadgen` account), QoS 1."""
    return connected_as(services, "loadgen")


def listener(services: Services, topic: str) -> Mqtt5Client:
    client = connected_as(services, "bridge")
    assert client.subscribe(topic) == 1
    return client


def report(client: Mqtt5Client, courier: str, order: str, status: str, ts: float) -> None:
    topic = f"fleet/couriers/{courier}/deliveries/{order}/status"
    assert client.publish(topic, json.dumps({"status": status, "ts": ts})) in ACCEPTED


def statuses(services: Services, orders: list[str]) -> dict[str, str]:
    with psycopg.connect(services.dsn) as conn:
        rows = conn.execute(
            "SELECT id, status FROM orders WHERE id = ANY(%s)", (orders,)
        ).fetchall()
    return {str(order): str(status) for order, status in rows}


def outcomes(services: Services, courier: str) -> int:
    return count_rows(
        services.dsn,
        "SELECT count(*) FROM report_outcomes o JOIN device_reports r ON r.id = o.report_id"
        " WHERE r.courier_id = %s",
        (courier,),
    )


def status_announcements(messages: list[tuple[str, bytes]]) -> dict[tuple[str, str], set[int]]:
    """(order, status) -> the distinct event ids that announced it."""
    seen: dict[tuple[str, str], set[int]] = defaultdict(set)
    for _, payload in messages:
        message = json.loads(payload)
        if message["event"] == "status":
            seen[(message["order_id"], message["status"])].add(message["event_id"])
    return seen


def gather_announcements(
    announcements: Mqtt5Client, expected: set[tuple[str, str]]
) -> dict[tuple[str, str], set[int]]:
    """Read status announcements until every expected (order, status) was seen."""
    seen: dict[tuple[str, str], set[int]] = defaultdict(set)

    def all_announced() -> bool:
        for key, ids in status_announcements(announcements.received(0.2)).items():
            seen[key].update(ids)
        return set(seen) >= expected

    wait_until(all_announced, timeout=120, what="every change to be announced")
    return seen


def test_kill_9_of_the_applier_loses_no_report_and_announces_each_change_once(
    own_services: Services, ingest: Worker
) -> None:
    unique = uuid.uuid4().hex[:8]
    courier, orders = make_orders(own_services, unique, 200)
    announcements = listener(own_services, "fleet/orders/+/status")
    api = ApiProcess(own_services).start()
    publisher = device(own_services)
    try:
        start = time.time() - 60
        for step, status in enumerate(WALK):
            for order in orders:
                report(publisher, courier, order, status, start + step)
        wait_until(
            lambda: outcomes(own_services, courier) >= 150,
            timeout=120,
            what="the applier to be under way",
        )
        api.kill()
        assert outcomes(own_services, courier) < len(orders) * len(WALK)
        api = ApiProcess(own_services).start()
        wait_until(
            lambda: outcomes(own_services, courier) == len(orders) * len(WALK),
            timeout=180,
            what="every report to be decided after the restart",
        )
        assert set(statuses(own_services, orders).values()) == {"delivered"}
        expected = {(order, status) for order in orders for status in WALK}
        seen = gather_announcements(announcements, expected)
        # A relay killed between PUBACK and marking the row sent repeats the same event_id;
        # a change is never announced under two ids.
        assert {key: len(ids) for key, ids in seen.items()} == dict.fromkeys(expected, 1)
        with psycopg.connect(own_services.dsn) as conn:
            applied = conn.execute(
                "SELECT o.outcome, count(*) FROM report_outcomes o"
                " JOIN device_reports r ON r.id = o.report_id WHERE r.courier_id = %s"
                " GROUP BY o.outcome",
                (courier,),
            ).fetchall()
        assert dict(applied) == {"applied": len(orders) * len(WALK)}
    finally:
        publisher.close()
        announcements.close()
        api.close()


def test_reports_sent_while_the_api_is_down_are_applied_when_it_returns(
    own_services: Services, ingest: Worker
) -> None:
    unique = uuid.uuid4().hex[:8]
    courier, orders = make_orders(own_services, unique, 20)
    announcements = listener(own_services, "fleet/orders/+/status")
    api = ApiProcess(own_services).start()
    publisher = device(own_services)
    try:
        # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done.
        assert api.terminate() in (0, -signal.SIGTERM)
        stopped = time.monotonic()
        start = time.time() - 60
        for order in orders:
            report(publisher, courier, order, "picked_up", start)
        emergency = {"ts": start, "lat": 52.5, "lon": 13.4, "message": "while the API is down"}
        assert publisher.publish(f"fleet/couriers/{courier}/emergency", json.dumps(emergency)) in (
            ACCEPTED
        )
        wait_until(
            lambda: (
                count_rows(
                    own_services.dsn,
                    "SELECT count(*) FROM device_reports WHERE courier_id = %s",
                    (courier,),
                )
                == len(orders) + 1
            ),
            timeout=60,
            what="ingest to store every report",
        )
        # The API stays down for 30 s; nothing is applied meanwhile, nothing is lost.
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        assert outcomes(own_services, courier) == 0
        assert set(statuses(own_services, orders).values()) == {"assigned"}
        api = ApiProcess(own_services).start()
        wait_until(
            lambda: outcomes(own_services, courier) == len(orders) + 1,
            timeout=120,
            what="the reports to be applied",
        )
        assert set(statuses(own_services, orders).values()) == {"picked_up"}
        assert (
            count_rows(
                own_services.dsn,
                "SELECT count(*) FROM alerts WHERE courier_id = %s AND message = %s",
                (courier, emergency["message"]),
            )
            == 1
        )
        expected = {(order, "picked_up") for order in orders}
        assert set(gather_announcements(announcements, expected)) == expected
    finally:
        publisher.close()
        announcements.close()
        api.close()


def test_a_crash_between_commit_and_publish_announces_after_restart_once(
    own_services: Services, ingest: Worker
) -> None:
    """The API commits the change and its outbox row, then dies before relaying it (the
    relay is switched off here, which is the same moment made to last)."""
    unique = uuid.uuid4().hex[:8]
    courier, (order,) = make_orders(own_services, unique, 1)
    announcements = listener(own_services, f"fleet/orders/{order}/status")
    api = ApiProcess(own_services, extra_env={"FLEETPULSE_OUTBOX_RELAY": "false"}).start()
    publisher = device(own_services)
    try:
        report(publisher, courier, order, "picked_up", time.time() - 5)
        wait_until(
            lambda: statuses(own_services, [order]) == {order: "picked_up"},
            timeout=60,
            what="the report to be applied",
        )
        waiting = count_rows(
            own_services.dsn,
            "SELECT count(*) FROM outbox WHERE topic = %s",
            (f"fleet/orders/{order}/status",),
        )
        assert waiting == 1
        api.kill()
        assert announcements.received(0.5) == []
        api = ApiProcess(own_services).start()
        topic, payload = announcements.next_message(timeout=30)
        message = json.loads(payload)
        assert (message["order_id"], message["status"]) == (order, "picked_up")
        assert isinstance(message["event_id"], int)
        assert message["version"] >= 2
        assert announcements.received(2.0) == []  # once
        assert (
            count_rows(
                own_services.dsn,
                "SELECT count(*) FROM outbox WHERE topic = %s",
                (topic,),
            )
            == 0
        )
    finally:
        publisher.close()
        announcements.close()
        api.close()
