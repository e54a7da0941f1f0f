"""The living demo: a fleet on MQTT plus a dispatcher on the REST API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, replace

import httpx

from auth import LocalSigner
from config import Settings
from sim.agents import Courier, Realism, Vehicle
from sim.driver import ApiError, DemoDriver
from sim.fleet import DeviceLogin, FleetCounters, go_offline, run_courier, run_vehicle
from sim.geo import CityBox, offset
from sim.status import StatusLine

log = logging.getLogger("sim.demo")

DEMO_CUSTOMERS = ["alice", "bob", "carol", "dave", "erin", "frank"]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    couriers: int
    vehicles: int
    owntracks_share: float
    order_interval_s: float
    restaurants: int
    emergency_per_hour: float
    dead_zone_per_hour: float
    city: CityBox
    api_url: str
    admin_token: str | None
    seed: int
    duration_s: float
    time_scale: float
    first_customer: str | None = None
    status_interval_s: float = 5.0


def admin_token(settings: Settings) -> str:
    """A local-mode admin token, signed with the stack's own key."""
    signer = LocalSigner.from_data_dir(settings.data_dir)
    return signer.issue(uid="sim-dispatch", role="admin", ttl_s=7 * 86_400)


def realism_for(options: DemoOptions) -> Realism:
    return replace(
        Realism(),
        dead_zone_chance=options.dead_zone_per_hour / 3600.0,
        emergency_chance=options.emergency_per_hour / 3600.0,
    )


async def run_demo(
    settings: Settings, options: DemoOptions, *, rng: random.Random, stop: asyncio.Event
) -> int:
    token = options.admin_token or admin_token(settings)
    driver = DemoDriver(
        api_url=options.api_url,
        admin_token=token,
        city=options.city,
        rng=rng,
        customers=DEMO_CUSTOMERS,
        run_id=f"{options.seed % 100_000}{int(time.time()) % 100_000}",
    )
    try:
        print(f"[sim] waiting for the API at {options.api_url} ...", flush=True)
        await driver.wait_until_ready()
        restaurants = await driver.create_restaurants(options.restaurants)
        couriers: list[Courier] = []
        logins: dict[str, DeviceLogin] = {}
        realism = realism_for(options)
        for index in range(options.couriers):
            courier_id = f"c-{index + 1}"
            logins[courier_id] = await driver.enrol("courier", courier_id, f"Courier {index + 1}")
            near = restaurants[sorted(restaurants)[index % len(restaurants)]]
            start = offset(near, north_m=rng.uniform(-800, 800), east_m=rng.uniform(-800, 800))
            couriers.append(
                Courier(
                    courier_id,
                    start,
                    random.Random(rng.random()),
                    realism=realism,
                    topic_prefix=settings.topic_prefix,
                    owntracks=index < round(options.couriers * options.owntracks_share),
                )
            )
        vehicles: list[Vehicle] = []
        for index in range(options.vehicles):
            vehicle_id = f"v-{index + 1}"
            logins[vehicle_id] = await driver.enrol("vehicle", vehicle_id, f"Van {index + 1}")
            vehicles.append(
                Vehicle(
                    vehicle_id,
                    options.city.random_point(rng),
                    random.Random(rng.random()),
                    options.city,
                    topic_prefix=settings.topic_prefix,
                )
            )
        print(
            f"[sim] {len(couriers)} couriers ({sum(c.owntracks for c in couriers)} on OwnTracks) "
            f"and {len(vehicles)} vehicles enrolled; going online",
            flush=True,
        )
        if options.first_customer and options.order_interval_s > 0:
            order_id = await driver.create_order(customer=options.first_customer)
            print(f"[sim] first order {order_id} for customer {options.first_customer}", flush=True)
        counters = FleetCounters()
        host, port = settings.mqtt_host, settings.mqtt_port
        try:
            async with asyncio.TaskGroup() as group:
                for courier in couriers:
                    group.create_task(
                        run_courier(
                            courier,
                            host=host,
                            port=port,
                            login=logins[courier.courier_id],
                            time_scale=options.time_scale,
                            counters=counters,
                        ),
                        name=f"courier-{courier.courier_id}",
                    )
                for vehicle in vehicles:
                    group.create_task(
                        run_vehicle(
                            vehicle,
                            host=host,
                            port=port,
                            login=logins[vehicle.vehicle_id],
                            time_scale=options.time_scale,
                            counters=counters,
                        ),
                        name=f"vehicle-{vehicle.vehicle_id}",
                    )
                if options.order_interval_s > 0:
                    group.create_task(
                        driver.keep_ordering(
                            courier_ids=[c.courier_id for c in couriers],
                            interval_s=options.order_interval_s,
                        ),
                        name="dispatcher",
                    )
                group.create_task(
                    _report(settings, driver, options.status_interval_s), name="status"
                )
                group.create_task(_until(stop, options.duration_s), name="stop")
        except* _Stop:
            pass
        print("[sim] signing couriers off ...", flush=True)
        await asyncio.gather(
            *(go_offline(c, host=host, port=port, login=logins[c.courier_id]) for c in couriers)
        )
        print(
            f"[sim] stopped: {counters.published:,} messages published, "
            f"{driver.counters.orders_created} orders created",
            flush=True,
        )
        return 0
    except ApiError as exc:
        print(f"[sim] error: {exc}", flush=True)
        return 1
    finally:
        await driver.close()


class _Stop(Exception):
    """Ends the demo's task group."""


async def _until(stop: asyncio.Event, duration_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration_s or None)
    raise _Stop


async def _report(settings: Settings, driver: DemoDriver, interval_s: float) -> None:
    status = StatusLine(
        ingest_metrics_url=f"http://127.0.0.1:{settings.ingest_metrics_port}/metrics",
        bridge_metrics_url=f"http://127.0.0.1:{settings.bridge_port}/metrics",
    )
    async with httpx.AsyncClient() as http:
        while True:
            await asyncio.sleep(interval_s)
            try:
                orders = dict(await driver.count_by_status())
            except (ApiError, httpx.TransportError) as exc:
                log.warning("status: %s", exc)
                orders = {}
            print(
                f"[status] {await status.render(http, now=time.time(), orders=orders)}", flush=True
            )
