from __future__ import annotations

import json
import random

from sim.agents import Courier, Job, Realism, Vehicle
from sim.geo import BERLIN, Point, distance_m, offset


def run(courier: Courier, seconds: int, start: float = 1_800_000_000.0) -> list[tuple[str, object]]:
    messages: list[tuple[str, object]] = []
    for second in range(seconds):
        messages.extend(
            (message.topic, json.loads(message.payload))
            for message in courier.tick(start + second, 1.0)
        )
    return messages


def test_a_courier_walks_an_order_from_pickup_to_delivery() -> None:
    here = Point(52.52, 13.40)
    job = Job(
        "o-1",
        pickup=offset(here, north_m=600, east_m=0),
        dropoff=offset(here, north_m=0, east_m=900),
    )
    courier = Courier("c-1", here, random.Random(7), realism=Realism(dead_zone_chance=0))
    courier.assign(job)
    messages = run(courier, 900)
    statuses = [body["status"] for topic, body in messages if topic.endswith("/status")]  # type: ignore[index]
    assert statuses == ["picked_up", "out_for_delivery", "delivered"]
    assert courier.delivered == ["o-1"]
    assert distance_m(courier.position, job.dropoff) < 1.0
    fixes = [body for topic, body in messages if topic == "fleet/couriers/c-1/location"]
    assert len(fixes) > 100
    assert all(0 <= fix["heading"] < 360 and fix["speed"] >= 0 for fix in fixes)  # type: ignore[index]


def test_dead_zone_uploads_one_out_of_order_batch() -> None:
    realism = Realism(dead_zone_chance=1.0, dead_zone_s=(30.0, 30.0), moving_fix_interval_s=2.0)
    courier = Courier("c-2", Point(52.5, 13.4), random.Random(3), realism=realism)
    courier.assign(Job("o-2", Point(52.51, 13.4), Point(52.52, 13.41)))
    messages = run(courier, 40)
    batches = [body for _, body in messages if isinstance(body, list)]
    assert len(batches) == 1
    times = [fix["ts"] for fix in batches[0]]
    assert len(times) >= 10
    assert times != sorted(times), "a buffered batch arrives out of order"


def test_owntracks_courier_speaks_owntracks() -> None:
    courier = Courier(
        "c-3",
        Point(52.5, 13.4),
        random.Random(5),
        owntracks=True,
        realism=Realism(dead_zone_chance=0),
    )
    courier.assign(Job("o-3", Point(52.51, 13.4), Point(52.52, 13.41)))
    messages = run(courier, 30)
    locations = [body for topic, body in messages if topic == "owntracks/c-3/phone"]
    assert locations
    first = locations[0]
    assert first["_type"] == "location"  # type: ignore[index]
    assert isinstance(first["tst"], int)  # type: ignore[index]
    assert json.loads(courier.will(0).payload)["_type"] == "lwt"


def test_same_seed_same_run() -> None:
    def trace(seed: int) -> list[tuple[str, object]]:
        courier = Courier("c-4", Point(52.5, 13.4), random.Random(seed))
        courier.assign(Job("o-4", Point(52.51, 13.4), Point(52.52, 13.41)))
        return run(courier, 300)

    assert trace(11) == trace(11)
    assert trace(11) != trace(12)


def test_vehicle_stays_in_the_city() -> None:
    vehicle = Vehicle("v-1", BERLIN.random_point(random.Random(1)), random.Random(1), BERLIN)
    for second in range(2000):
        for message in vehicle.tick(1_800_000_000.0 + second, 1.0):
            body = json.loads(message.payload)
            assert BERLIN.south - 0.01 < body["lat"] < BERLIN.north + 0.01
            assert BERLIN.west - 0.01 < body["lon"] < BERLIN.east + 0.01
