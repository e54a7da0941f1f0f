"""Simulated phones against the real secured broker and the real ingest worker."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace

from config import load_settings
from sim.agents import Courier, Realism
from sim.fleet import DeviceLogin, FleetCounters, job_from_assignment, run_courier
from sim.geo import Point
from sim.load import LoadOptions, run_load
from tests.ingest_harness import count_rows, running_worker, wait_until
from tests.services import Services


def login_for(services: Services, courier_id: str) -> DeviceLogin:
    credentials = services.provision_device("courier", courier_id)
    return DeviceLogin(credentials.username, credentials.password, credentials.client_id)


async def drive(
    couriers: list[tuple[Courier, DeviceLogin]],
    *,
    services: Services,
    seconds: float,
    time_scale: float,
) -> FleetCounters:
    counters = FleetCounters()
    tasks = [
        asyncio.create_task(
            run_courier(
                courier,
                host=services.mosquitto.host,
                port=services.mosquitto.port,
                login=login,
                counters=counters,
                tick_s=0.25,
                time_scale=time_scale,
            )
        )
        for courier, login in couriers
    ]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    # Each exit is bounded (mqttlink.reconnect.EXIT_TIMEOUT_S).
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return counters


def test_dead_zone_batch_and_owntracks_phones_are_stored_in_full(
    services: Services, unique: str
) -> None:
    native_id, owntracks_id = f"sn-{unique}", f"so-{unique}"
    realism = Realism(
        dead_zone_chance=0.2,
        dead_zone_s=(6.0, 10.0),
        moving_fix_interval_s=1.0,
        stopped_fix_interval_s=1.0,
    )
    native = Courier(native_id, Point(52.5, 13.4), random.Random(1), realism=realism)
    # OwnTracks times are whole seconds: at most one fix per real second, or they collide.
    owntracks_realism = replace(realism, moving_fix_interval_s=6.0, stopped_fix_interval_s=6.0)
    owntracks = Courier(
        owntracks_id,
        Point(52.51, 13.41),
        random.Random(2),
        realism=owntracks_realism,
        owntracks=True,
    )
    couriers = [
        (native, login_for(services, native_id)),
        (owntracks, login_for(services, owntracks_id)),
    ]
    with running_worker(services, group=f"sim{unique}") as worker:
        counters = asyncio.run(drive(couriers, services=services, seconds=8.0, time_scale=5.0))
        assert counters.batches >= 1, "the dead zone must have produced a batch upload"
        assert counters.fixes > 30

        def stored() -> int:
            return count_rows(
                services.dsn,
                "SELECT count(*) FROM positions WHERE source_id IN (%s, %s)",
                (native_id, owntracks_id),
            )

        wait_until(
            lambda: stored() == counters.fixes,
            timeout=30,
            what=f"{counters.fixes} simulated fixes in the database",
        )
        assert worker.alive()
    # The OwnTracks phone appears like any other courier.
    per_source = count_rows(
        services.dsn,
        "SELECT count(DISTINCT source_id) FROM positions"
        " WHERE source_kind = 'courier' AND source_id IN (%s, %s)",
        (native_id, owntracks_id),
    )
    assert per_source == 2
    # Nothing the phones sent was refused.
    assert (
        count_rows(
            services.dsn, "SELECT count(*) FROM dead_letters WHERE topic LIKE %s", (f"%{unique}%",)
        )
        == 0
    )


def test_assignment_messages_are_understood() -> None:
    order_id, job = job_from_assignment(
        b'{"type": "assignment", "order_id": "o-1", "courier_id": "c-42",'
        b' "pickup": {"lat": 52.5, "lon": 13.4}, "dropoff": {"lat": 52.52, "lon": 13.45}}'
    )
    assert order_id == "o-1"
    assert job is not None
    assert job.dropoff == Point(52.52, 13.45)
    assert job_from_assignment(b'{"type": "unassignment", "order_id": "o-1"}') == ("o-1", None)


def test_load_mode_publishes_every_fix_once(services: Services, unique: str) -> None:
    """The load generator: distinct fixes from K couriers, every one acknowledged and stored."""
    settings = load_settings(_env_file=None, **_settings_for(services))
    loadgen = services.credentials("loadgen")
    seed = int(unique[:6], 16)
    options = LoadOptions(
        couriers=5, rate=0.0, count=3000, seed=seed,
        username=loadgen.username, password=loadgen.password,
    )  # fmt: skip
    with running_worker(services, group=f"load{unique}"):
        assert asyncio.run(run_load(settings, options, stop=asyncio.Event())) == 0

        def stored() -> int:
            return count_rows(
                services.dsn,
                "SELECT count(*) FROM positions WHERE source_id LIKE %s",
                (f"load-{seed}-%",),
            )

        wait_until(lambda: stored() == 3000, timeout=60, what="3000 load fixes stored")


def _settings_for(services: Services) -> dict[str, object]:
    return {
        "data_dir": services.root,
        "mqtt_host": services.mosquitto.host,
        "mqtt_port": services.mosquitto.port,
        "database_url": services.dsn,
    }
