"""ETA on a synthetic straight-line route, downsampled tracks, GPX, last positions,
availability from presence, and analytics."""

from __future__ import annotations

import json
import math
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.api.conftest import World
from tests.api.fixes import store_fixes
from workflow import EtaParameters, Fix, haversine_m
from workflow.eta import average_speed

# One degree of longitude at 52.5° N, in metres.
M_PER_DEG_LON = 111_320 * math.cos(math.radians(52.5))


def straight_line(
    *, start: datetime, seconds: int, speed: float, lon0: float
) -> list[tuple[datetime, float, float, float | None]]:
    """Eastward along 52.5° N at `speed` m/s, one fix per second."""
    return [
        (start + timedelta(seconds=s), 52.5, lon0 + s * speed / M_PER_DEG_LON, speed)
        for s in range(seconds)
    ]


def test_eta_is_plausible_on_a_straight_line(world: World, db: psycopg.Connection[Any]) -> None:
    order = world.new_order(assign=world.courier_id)
    oid = order["id"]
    now = datetime.now(UTC)
    # The courier rode 60 s at 8 m/s and is now 5 km west of the drop-off, food on board.
    fixes = straight_line(start=now - timedelta(seconds=60), seconds=60, speed=8.0, lon0=13.3)
    last_time, _, last_lon, _ = fixes[-1]
    dropoff_lon = last_lon + 5000 / M_PER_DEG_LON
    db.execute(
        "UPDATE orders SET dropoff_lat = 52.5, dropoff_lon = %s WHERE id = %s",
        (dropoff_lon, oid),
    )
    assert (
        world.admin.post(f"/orders/{oid}/status", json={"status": "picked_up"}).status_code == 200
    )
    store_fixes(db, world.courier_id, fixes)
    detour = world.api.settings.eta_detour_factor
    expected = last_time + timedelta(seconds=5000 * detour / 8.0)
    # The background task recomputes within a few seconds of a new fix.
    deadline = time.monotonic() + 15
    eta = None
    while time.monotonic() < deadline:
        value = world.admin.get(f"/orders/{oid}").json()["eta"]
        eta = datetime.fromisoformat(value) if value else None
        if eta is not None and abs((eta - expected).total_seconds()) < 30:
            break
        time.sleep(0.2)
    assert eta is not None
    # 5 km at 8 m/s with the detour factor: within 5 % of the exact figure.
    assert abs((eta - expected).total_seconds()) < 0.05 * 5000 * detour / 8.0, (eta, expected)

    # Half-way there the ETA moves with the courier (published as an `eta` status event).
    more = straight_line(
        start=last_time + timedelta(seconds=1),
        seconds=30,
        speed=8.0,
        lon0=last_lon + 8.0 / M_PER_DEG_LON,
    )
    store_fixes(db, world.courier_id, more)
    expected_later = more[-1][0] + timedelta(
        seconds=haversine_m(52.5, more[-1][2], 52.5, dropoff_lon) * detour / 8.0
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        later = datetime.fromisoformat(world.admin.get(f"/orders/{oid}").json()["eta"])
        if abs((later - expected_later).total_seconds()) < 15:
            break
        time.sleep(0.2)
    assert abs((later - expected_later).total_seconds()) < 15


def test_eta_default_speed_with_too_little_data() -> None:
    params = EtaParameters(default_speed_mps=5.0)
    now = datetime.now(UTC)
    assert average_speed([], params) == 5.0
    assert average_speed([Fix(now, 52.5, 13.4, 9.0)], params) == 5.0
    # Standing still says nothing about the trip: the default, not zero.
    still = [Fix(now + timedelta(seconds=i), 52.5, 13.4, 0.0) for i in range(10)]
    assert average_speed(still, params) == 5.0
    # Without reported speeds the distance over time counts.
    moving = [
        Fix(now + timedelta(seconds=i), 52.5, 13.4 + i * 10 / M_PER_DEG_LON, None)
        for i in range(10)
    ]
    assert abs(average_speed(moving, params) - 10.0) < 0.1


def test_downsampled_track_has_the_expected_buckets(
    world: World, db: psycopg.Connection[Any]
) -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    # One fix every 5 s for an hour: 720 fixes.
    fixes = [(start + timedelta(seconds=5 * i), 52.5, 13.3 + i * 1e-4, 6.0) for i in range(720)]
    store_fixes(db, world.courier_id, fixes)
    params = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    for resolution, buckets in ((60, 60), (300, 12), (3600, 1), (5, 720)):
        response = world.admin.get(
            f"/couriers/{world.courier_id}/track", params={**params, "resolution_s": resolution}
        )
        assert response.status_code == 200
        points = response.json()["points"]
        assert len(points) == buckets, resolution
        assert sum(p["fixes"] for p in points) == 720
    # Each bucket carries its last fix: the minute starting at 12:00 ends with fix 11.
    first = world.admin.get(
        f"/couriers/{world.courier_id}/track", params={**params, "resolution_s": 60}
    ).json()["points"][0]
    assert first["ts"].startswith("2026-03-01T12:00:00")
    assert abs(first["lon"] - (13.3 + 11e-4)) < 1e-9
    assert first["fixes"] == 12

    geo = world.admin.get(
        f"/couriers/{world.courier_id}/track",
        params={**params, "resolution_s": 60, "format": "geojson"},
    ).json()
    assert geo["type"] == "Feature"
    assert geo["geometry"]["type"] == "LineString"
    assert len(geo["geometry"]["coordinates"]) == 60
    assert geo["geometry"]["coordinates"][0] == [first["lon"], first["lat"]]

    gpx = world.admin.get(f"/couriers/{world.courier_id}/track.gpx", params=params)
    assert gpx.status_code == 200
    assert gpx.headers["content-type"].startswith("application/gpx+xml")
    root = ET.fromstring(gpx.content)  # noqa: S314 (our own server's output)
    ns = {"g": "http://www.topografix.com/GPX/1/1"}
    trkpts = root.findall(".//g:trkpt", ns)
    assert len(trkpts) == 720
    assert trkpts[0].find("g:time", ns).text == "2026-03-01T12:00:00.000000Z"  # type: ignore[union-attr]


def test_track_window_is_validated(world: World) -> None:
    path = f"/couriers/{world.courier_id}/track"
    cases = [
        {"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
        {"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
        {"start": "2026-03-01T00:00:00", "end": "2026-03-01T01:00:00"},
        {"resolution_s": "0"},
        {"format": "kml"},
    ]
    for params in cases:
        response = world.admin.get(path, params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "invalid"


def test_last_positions_and_availability(world: World, db: psycopg.Connection[Any]) -> None:
    now = datetime.now(UTC)
    store_fixes(db, world.courier_id, [(now - timedelta(seconds=5), 52.51, 13.41, 3.0)])
    store_fixes(db, f"v-{world.courier_id}", [(now, 52.52, 13.42, None)], kind="vehicle")
    body = world.admin.get("/positions/latest").json()
    items = {(i["source_kind"], i["source_id"]): i for i in body["items"]}
    assert body["count"] == len(body["items"])
    mine = items[("courier", world.courier_id)]
    assert mine["lat"] == 52.51
    assert datetime.fromisoformat(mine["ts"]) == now - timedelta(seconds=5)
    assert ("vehicle", f"v-{world.courier_id}") in items
    vehicles = world.admin.get("/positions/latest", params={"kind": "vehicle"}).json()["items"]
    assert {i["source_kind"] for i in vehicles} == {"vehicle"}
    # The columnar layout carries the same rows, field by field, in the same order.
    columns = world.admin.get("/positions/latest", params={"layout": "columns"}).json()
    assert columns["count"] == body["count"]
    fields = ("source_kind", "source_id", "ts", "lat", "lon", "speed", "heading", "battery")
    as_rows = [
        dict(zip(fields, values, strict=True))
        for values in zip(*(columns[f] for f in fields), strict=True)
    ]
    assert [r["source_id"] for r in as_rows] == [i["source_id"] for i in body["items"]]
    assert [datetime.fromisoformat(r["ts"]) for r in as_rows] == [
        datetime.fromisoformat(i["ts"]) for i in body["items"]
    ]
    assert [(r["lat"], r["lon"], r["speed"]) for r in as_rows] == [
        (i["lat"], i["lon"], i["speed"]) for i in body["items"]
    ]
    vehicles_only = world.admin.get(
        "/positions/latest", params={"layout": "columns", "kind": "vehicle"}
    ).json()
    assert vehicles_only["count"] == len(vehicles_only["source_id"]) >= 1
    assert set(vehicles_only["source_kind"]) == {"vehicle"}

    def availability(courier_id: str) -> str:
        state: str = world.admin.get(f"/couriers/{courier_id}").json()["availability"]
        return state

    # A recent fix: online. Nothing ever heard: offline.
    assert availability(world.courier_id) == "online"
    assert availability(world.other_courier_id) == "offline"
    # Presence `busy` (as ingest stores it) wins while recent.
    db.execute(
        "INSERT INTO events (event_time, kind, source_kind, source_id, payload, dedup_key)"
        " VALUES (%s, 'presence', 'courier', %s, %s, %s)",
        (now, world.courier_id, json.dumps({"state": "busy"}), f"p/{world.courier_id}/1"),
    )
    assert availability(world.courier_id) == "busy"
    # An `offline` presence newer than the last fix: offline.
    db.execute(
        "INSERT INTO events (event_time, kind, source_kind, source_id, payload, dedup_key)"
        " VALUES (%s, 'presence', 'courier', %s, %s, %s)",
        (
            now + timedelta(seconds=1),
            world.courier_id,
            json.dumps({"state": "offline"}),
            f"p/{world.courier_id}/2",
        ),
    )
    assert availability(world.courier_id) == "offline"
    # A fix heard longer ago than the timeout (120 s, by arrival): offline.
    old = now - timedelta(seconds=300)
    store_fixes(db, world.other_courier_id, [(old, 52.5, 13.4, 1.0)])
    db.execute(
        "UPDATE last_positions SET received_at = %s WHERE source_id = %s",
        (old, world.other_courier_id),
    )
    assert availability(world.other_courier_id) == "offline"
    # An active order makes an online courier busy.
    store_fixes(db, world.other_courier_id, [(now, 52.5, 13.4, 1.0)])
    assert availability(world.other_courier_id) == "online"
    world.new_order(assign=world.other_courier_id)
    assert availability(world.other_courier_id) == "busy"


def test_analytics_for_a_period(world: World, db: psycopg.Connection[Any]) -> None:
    start = datetime(2026, 4, 1, 10, 0, tzinfo=UTC)
    end = start + timedelta(hours=1)
    store_fixes(
        db,
        world.courier_id,
        [(start + timedelta(seconds=10 * i), 52.5, 13.4, 1.0) for i in range(360)],
    )
    orders = [world.new_order(assign=world.courier_id) for _ in range(3)]
    # Two delivered in the period (20 and 40 minutes after creation), one on time.
    for order, minutes, promised in ((orders[0], 20, 30), (orders[1], 40, 30)):
        db.execute(
            """
            UPDATE orders SET status = 'delivered', created_at = %s, promised_at = %s,
                delivered_at = %s WHERE id = %s
            """,
            (
                start,
                start + timedelta(minutes=promised),
                start + timedelta(minutes=minutes),
                order["id"],
            ),
        )
    db.execute("UPDATE orders SET created_at = %s WHERE id = %s", (start, orders[2]["id"]))
    response = world.admin.get(
        "/analytics", params={"start": start.isoformat(), "end": end.isoformat()}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["orders_by_status"] == {"delivered": 2, "assigned": 1}
    assert body["deliveries"] == 2
    assert body["avg_delivery_s"] == 1800
    assert abs(body["p90_delivery_s"] - (1200 + 0.9 * 1200)) < 1e-6
    assert body["on_time_rate"] == 0.5
    assert body["fixes_total"] == 360
    assert body["fixes_per_minute"] == 6
    assert len(body["fixes_series"]) == 60
    assert {p["fixes"] for p in body["fixes_series"]} == {6}
