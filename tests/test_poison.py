"""Poison on every device topic: dead-lettered with a reason, never a crash, never a wedge.

A real `python -m ingest`, real Mosquitto and TimescaleDB. Good fixes go out before and after
each round of poison; the worker's pid must not change, and it must come back up with the
poison waiting in its persistent session.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.ingest_harness import Worker, count_rows, positions_of, wait_until
from tests.mqtt5 import ACCEPTED, Mqtt5Client, connected_as
from tests.services import Services

NUL = "\u0000"
HUGE = "x" * (60 * 1024)


def deep(depth: int) -> bytes:
    return ("[" * depth + "1" + "]" * depth).encode()


def poisons(courier: str, order: str) -> list[tuple[str, bytes]]:
    """(topic, payload): every poison class on every device topic; none is storable."""
    now = time.time()
    location = f"fleet/couriers/{courier}/location"
    topics: dict[str, dict[str, Any]] = {
        location: {"lat": 1.0, "lon": 2.0, "ts": "2026-01-01T00:00:00Z"},
        f"fleet/vehicles/v{courier}/location": {"lat": 1.0, "lon": 2.0, "ts": now},
        f"fleet/couriers/{courier}/presence": {"state": "online", "ts": now},
        f"fleet/couriers/{courier}/emergency": {"ts": now, "message": "help"},
        f"fleet/couriers/{courier}/deliveries/{order}/status": {"status": "picked_up", "ts": now},
        f"owntracks/{courier}/phone": {"_type": "location", "lat": 1.0, "lon": 2.0, "tst": now},
        f"owntracks/{courier}/phone/event": {
            "_type": "transition",
            "event": "enter",
            "desc": "home",
            "tst": now,
            "lat": 1.0,
            "lon": 2.0,
            "acc": 5,
            "t": "c",
            "rid": "r1",
        },
    }
    out: list[tuple[str, bytes]] = []
    for topic, valid in topics.items():
        out.extend((topic, deep(depth)) for depth in (10, 1_000, 100_000))
        out.append((topic, json.dumps({"x": json.loads("[" * 40 + "]" * 40), **valid}).encode()))
        for key, value in valid.items():  # NUL in every string field, in turn
            if isinstance(value, str):
                out.append((topic, json.dumps({**valid, key: value + NUL}).encode()))
        first_key = next(iter(valid))
        out.append((topic, json.dumps({**valid, first_key: HUGE}).encode()))
        number_key = next(k for k, v in valid.items() if isinstance(v, float | int))
        body = json.dumps({**valid, number_key: 0.5}).replace("0.5", "1e400")
        out.append((topic, body.encode()))
    # A batch in which one fix is poison: the others are still stored.
    out.append((location, b'[{"lat":1,"lon":2,"ts":1e400}]'))
    return out


@pytest.fixture
def device(services: Services) -> Iterator[Mqtt5Client]:
    client = connected_as(services, "loadgen")
    yield client
    client.close()


def good_fix(client: Mqtt5Client, vehicle: str, ts: float) -> None:
    payload = json.dumps({"lat": 10.0, "lon": 20.0, "ts": ts})
    assert client.publish(f"fleet/vehicles/{vehicle}/location", payload) in ACCEPTED


def dead_letters(services: Services, courier: str) -> list[tuple[str, bytes, str]]:
    with psycopg.connect(services.dsn) as conn:
        rows = conn.execute(
            "SELECT topic, payload, reason FROM dead_letters WHERE topic LIKE %s OR topic LIKE %s",
            (f"%/{courier}/%", f"%/v{courier}/%"),
        ).fetchall()
    return [(str(t), bytes(p), str(r)) for t, p, r in rows]


def assert_all_dead_lettered(
    services: Services, courier: str, sent: list[tuple[str, bytes]]
) -> None:
    wait_until(
        lambda: len(dead_letters(services, courier)) >= len(sent),
        timeout=60,
        what="every poison message to be dead-lettered",
    )
    stored = dead_letters(services, courier)
    assert sorted((t, p) for t, p, _ in stored) == sorted(sent)
    assert all(reason.strip() for _, _, reason in stored)
    assert count_rows(services.dsn, "SELECT count(*) FROM device_reports WHERE courier_id = %s",
                      (courier,)) == 0  # fmt: skip


def test_poison_on_every_topic_is_dead_lettered_and_the_worker_lives(
    services: Services, device: Mqtt5Client
) -> None:
    unique = uuid.uuid4().hex[:8]
    courier, vehicle = f"p{unique}", f"good{unique}"
    with Worker(services, group=f"poison-{unique}") as worker:
        pid = worker.pid
        start = time.time() - 100
        good_fix(device, vehicle, start)
        sent = poisons(courier, f"o{unique}")
        for topic, payload in sent:
            assert device.publish(topic, payload) in ACCEPTED
        good_fix(device, vehicle, start + 1)
        wait_until(lambda: positions_of(services.dsn, vehicle) == 2, timeout=60, what="fixes")
        assert_all_dead_lettered(services, courier, sent)
        assert worker.pid == pid
        assert worker.alive()
        assert worker.metric("fleetpulse_ingest_invalid_total", 'reason="too_deep"') >= 14


def test_the_worker_restarts_cleanly_with_poison_in_its_session(
    services: Services, device: Mqtt5Client
) -> None:
    unique = uuid.uuid4().hex[:8]
    courier, vehicle = f"q{unique}", f"good{unique}"
    group, client_id = f"poison-{unique}", f"poison-worker-{unique}"
    with Worker(services, group=group, client_id=client_id) as worker:
        worker.kill()  # as a crash would: the session stays at the broker, still subscribed
    sent = poisons(courier, f"o{unique}")
    start = time.time() - 100
    for topic, payload in sent:
        assert device.publish(topic, payload) in ACCEPTED
    good_fix(device, vehicle, start)
    with Worker(services, group=group, client_id=client_id) as worker:
        pid = worker.pid
        wait_until(lambda: positions_of(services.dsn, vehicle) == 1, timeout=60, what="the fix")
        assert_all_dead_lettered(services, courier, sent)
        good_fix(device, vehicle, start + 1)
        wait_until(lambda: positions_of(services.dsn, vehicle) == 2, timeout=60, what="the fix")
        assert worker.pid == pid
        assert worker.alive()


def test_a_row_the_database_refuses_is_dead_lettered_and_its_batch_stored(
    services: Services, device: Mqtt5Client, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Drive the refusal directly: a constraint in this test's database refuses one fix
    that the decoder accepts; the other fixes of the same batch are stored."""
    unique = uuid.uuid4().hex[:8]
    vehicle = f"refused{unique}"
    constraint = f"refuse_{unique}"
    db.execute(
        f"ALTER TABLE positions ADD CONSTRAINT {constraint}"
        f" CHECK (source_id <> '{vehicle}' OR lat <> 66.6) NOT VALID"
    )
    try:
        with Worker(
            services, group=f"refuse-{unique}", extra_env={"FLEETPULSE_INGEST_BATCH_AGE_MS": "500"}
        ) as worker:
            start = time.time() - 100
            topic = f"fleet/vehicles/{vehicle}/location"
            for i, lat in enumerate((1.0, 66.6, 2.0, 3.0)):
                payload = json.dumps({"lat": lat, "lon": 2.0, "ts": start + i})
                assert device.publish(topic, payload) in ACCEPTED
            wait_until(lambda: positions_of(services.dsn, vehicle) == 3, timeout=60, what="rows")
            wait_until(
                lambda: (
                    count_rows(
                        services.dsn,
                        "SELECT count(*) FROM dead_letters WHERE topic = %s"
                        " AND reason LIKE 'database_rejected:%%'",
                        (topic,),
                    )
                    == 1
                ),
                timeout=60,
                what="the refused row's dead letter",
            )
            assert (
                worker.metric("fleetpulse_ingest_invalid_total", 'reason="database_rejected"') >= 1
            )
            assert worker.alive()
    finally:
        db.execute(f"ALTER TABLE positions DROP CONSTRAINT {constraint}")
