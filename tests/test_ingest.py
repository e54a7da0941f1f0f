"""Ingest against the real Mosquitto and TimescaleDB: rows, units, events, dead letters."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from tests.ingest_harness import (
    LinePublisher,
    Worker,
    count_rows,
    fix_lines,
    mosquitto_pub,
    positions_of,
    running_worker,
    wait_until,
)
from tests.services import Services

# From the OwnTracks booklet (owntracks.org/booklet/tech/json, .../features/waypoints); the
# location example's lat/lon placeholders filled with the transition example's coordinates.
OWNTRACKS_LOCATION = (
    b'{"_type":"location","acc":75,"alt":13,"batt":81,"cog":270,"lat":48.87069,'
    b'"lon":2.34916,"t":"x","tid":"YY","tst":1376715317,"vac":10,"vel":54,"conn":"w"}'
)
OWNTRACKS_TRANSITION = (
    b'{"_type":"transition","desc":"My favorite coffee shop (Delaville)","event":"enter",'
    b'"lat":48.87069,"lon":2.34916,"rid":"f7676c","tid":"j1","tst":1707057574,"wtst":1610104395}'
)
OWNTRACKS_LWT = b'{"_type":"lwt","tst":1376715317}'
OWNTRACKS_WAYPOINT = (
    b'{"_type":"waypoint","desc":"Paris is lovely","lat":"48.858330","lon":"2.295130",'
    b'"rad":"50","tst":"1385997757","rid":"f7676c"}'
)


def as_bytes(value: object) -> bytes:
    assert isinstance(value, bytes | memoryview)
    return bytes(value)


@pytest.fixture
def worker(services: Services, unique: str) -> Iterator[Worker]:
    with running_worker(services, group=f"g{unique}") as started:
        yield started


def fetch(
    db: psycopg.Connection[tuple[object, ...]], sql: str, *params: object
) -> list[tuple[object, ...]]:
    return db.execute(sql, params).fetchall()


def test_native_batch_and_owntracks_become_rows_with_units(
    services: Services, db: psycopg.Connection[tuple[object, ...]], worker: Worker, unique: str
) -> None:
    courier, vehicle, phone_user = f"c{unique}", f"v{unique}", f"o{unique}"
    now = time.time()
    mosquitto_pub(
        services,
        f"fleet/couriers/{courier}/location",
        json.dumps(
            {
                "lat": 52.52,
                "lon": 13.405,
                "ts": now - 2,
                "speed": 8.3,
                "heading": 270,
                "accuracy": 5,
                "altitude": 34,
                "battery": 81,
            }
        ).encode(),
    )
    batch = [  # a tracker's buffer, out of order, one time in ISO 8601 with an offset
        {"lat": 48.0, "lon": 11.0, "ts": "2026-01-01T10:00:02+01:00"},
        {"lat": 48.1, "lon": 11.1, "ts": 1767258000.5, "speed": 0},
        {"lat": 48.2, "lon": 11.2, "ts": "2026-01-01T09:00:01Z", "heading": 359.9},
    ]
    mosquitto_pub(services, f"fleet/vehicles/{vehicle}/location", json.dumps(batch).encode())
    mosquitto_pub(services, f"owntracks/{phone_user}/phone", OWNTRACKS_LOCATION)
    mosquitto_pub(services, f"owntracks/{phone_user}/phone/event", OWNTRACKS_TRANSITION)
    mosquitto_pub(services, f"owntracks/{phone_user}/phone", OWNTRACKS_LWT)
    mosquitto_pub(
        services,
        f"fleet/couriers/{courier}/presence",
        b'{"state":"online","ts":"2026-11-01T08:00:00Z"}',
    )
    mosquitto_pub(
        services,
        f"fleet/couriers/{courier}/emergency",
        f'{{"lat":52.5,"lon":13.4,"ts":{now - 1},"message":"crashed, need help"}}'.encode(),
    )
    mosquitto_pub(
        services,
        f"fleet/couriers/{courier}/deliveries/ord{unique}/status",
        b'{"status":"picked_up","ts":1790000000,"note":"2 bags"}',
    )
    wait_until(
        lambda: (
            count_rows(
                services.dsn,
                "SELECT count(*) FROM events WHERE source_id IN (%s, %s)",
                (courier, phone_user),
            )
            == 3
            # The status report and the emergency go to the inbox the API applies.
            and count_rows(
                services.dsn,
                "SELECT count(*) FROM device_reports WHERE courier_id = %s",
                (courier,),
            )
            == 2
            and positions_of(services.dsn, vehicle) == 3
            and positions_of(services.dsn, courier) == 1
            and positions_of(services.dsn, phone_user) == 1
        ),
        timeout=20,
        what="all rows",
    )

    (native,) = fetch(
        db,
        "SELECT source_kind, lat, lon, speed, heading, accuracy, altitude, battery, fix_time"
        " FROM positions WHERE source_id = %s",
        courier,
    )
    assert native[:8] == ("courier", 52.52, 13.405, pytest.approx(8.3), 270, 5, 34, 81)
    assert isinstance(native[8], datetime)
    assert abs(native[8].timestamp() - (now - 2)) < 1e-3

    tracker = fetch(
        db,
        "SELECT source_kind, fix_time, lat, speed, heading FROM positions"
        " WHERE source_id = %s ORDER BY fix_time",
        vehicle,
    )
    assert [(r[0], r[1], r[2]) for r in tracker] == [
        ("vehicle", datetime(2026, 1, 1, 9, 0, 0, 500000, tzinfo=UTC), 48.1),
        ("vehicle", datetime(2026, 1, 1, 9, 0, 1, tzinfo=UTC), 48.2),
        ("vehicle", datetime(2026, 1, 1, 9, 0, 2, tzinfo=UTC), 48.0),
    ]
    assert [(r[3], r[4]) for r in tracker] == [
        (0, None),
        (None, pytest.approx(359.9)),
        (None, None),
    ]
    # last_positions holds the newest fix, not the last one received.
    (newest,) = fetch(db, "SELECT fix_time, lat FROM last_positions WHERE source_id = %s", vehicle)
    assert newest == (datetime(2026, 1, 1, 9, 0, 2, tzinfo=UTC), 48.0)

    (owntracks,) = fetch(
        db,
        "SELECT source_kind, fix_time, lat, lon, speed, heading, accuracy, altitude, battery"
        " FROM positions WHERE source_id = %s",
        phone_user,
    )
    assert owntracks[0] == "courier"
    assert owntracks[1] == datetime.fromtimestamp(1376715317, UTC)
    assert owntracks[2:4] == (48.87069, 2.34916)
    assert owntracks[4] == pytest.approx(15.0)  # vel 54 km/h
    assert owntracks[5:] == (270, 75, 13, 81)

    events = {
        row[0]: row[1:]
        for row in fetch(
            db,
            "SELECT kind, event_time, order_id, payload FROM events WHERE source_id IN (%s, %s)",
            courier,
            phone_user,
        )
        if row[0] != "presence"
    }
    geofence = events["geofence"]
    assert geofence[0] == datetime.fromtimestamp(1707057574, UTC)
    assert isinstance(geofence[2], dict)
    assert geofence[2]["event"] == "enter"
    assert geofence[2]["region"] == "My favorite coffee shop (Delaville)"
    assert set(events) == {"geofence"}
    reports = {
        row[0]: row[1:]
        for row in fetch(
            db,
            "SELECT kind, order_id, report_time, payload FROM device_reports WHERE courier_id = %s",
            courier,
        )
    }
    assert reports["status"][0] == f"ord{unique}"
    assert reports["status"][1] == datetime.fromtimestamp(1790000000, UTC)
    assert isinstance(reports["status"][2], dict)
    assert reports["status"][2]["status"] == "picked_up"
    assert reports["status"][2]["note"] == "2 bags"
    assert reports["emergency"][0] is None
    assert isinstance(reports["emergency"][2], dict)
    assert reports["emergency"][2]["message"] == "crashed, need help"
    presence = fetch(
        db,
        "SELECT source_id, payload->>'state', event_time FROM events"
        " WHERE kind = 'presence' AND source_id IN (%s, %s) ORDER BY source_id",
        courier,
        phone_user,
    )
    assert presence == [
        (courier, "online", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
        (phone_user, "offline", datetime.fromtimestamp(1376715317, UTC)),
    ]


def test_bad_input_is_dead_lettered_while_good_data_keeps_flowing(
    services: Services, db: psycopg.Connection[tuple[object, ...]], worker: Worker, unique: str
) -> None:
    good = f"g{unique}"
    location = f"fleet/couriers/b{unique}/location"
    head = b'{"lat": 1, "lon": 2, "ts": 1700000000, "pad": "'
    megabyte = head + b"x" * (1024 * 1024 - len(head) - 2) + b'"}'
    assert len(megabyte) == 1024 * 1024
    cases: list[tuple[str, bytes | None, str]] = [
        (location, b"lat=52.5;lon=13.4", "not_json"),
        (location, b'{"lat": 52.5, "lon": "\xff\xfe"}', "not_utf8"),
        (location, None, "empty"),
        (location, megabyte, "too_large"),
        (location, b'{"lat": "52.5", "lon": 13.4, "ts": 1700000000}', "wrong_type"),
        (location, b'{"lon": 13.4, "ts": 1700000000}', "missing_field"),
        (location, b'{"lat": 91, "lon": 13.4, "ts": 1700000000}', "out_of_range"),
        (location, b'{"lat": 1, "lon": 2, "ts": 1700000000, "battery": 140}', "out_of_range"),
        (location, b'{"lat": 1, "lon": 2, "ts": 4102444800}', "ts_in_future"),
        (location, b'{"lat": 1, "lon": 2, "ts": 915148800}', "ts_too_old"),
        (
            f"fleet/couriers/b{unique}/locaton",
            b'{"lat": 1, "lon": 2, "ts": 1700000000}',
            "bad_topic",
        ),
        (f"fleet/bikes/b{unique}/location", b'{"lat": 1, "lon": 2, "ts": 1700000000}', "bad_topic"),
        (
            f"fleet/couriers/b{unique}!x/location",
            b'{"lat": 1, "lon": 2, "ts": 1700000000}',
            "bad_id",
        ),
        (f"owntracks/b{unique}/phone", OWNTRACKS_WAYPOINT, "unsupported_type"),
        (
            f"fleet/couriers/b{unique}/presence",
            b'{"state": "sleeping", "ts": 1700000000}',
            "invalid_value",
        ),
    ]
    start = time.time() - 100
    for index, (topic, payload, _) in enumerate(cases):
        mosquitto_pub(services, topic, payload)
        mosquitto_pub(
            services,
            f"fleet/couriers/{good}/location",
            f'{{"lat": 1, "lon": 2, "ts": {start + index}}}'.encode(),
        )
    # One bad element in a batch fails only that element.
    mosquitto_pub(
        services,
        location,
        b'[{"lat": 1, "lon": 2, "ts": 1700000001}, {"lat": 1, "lon": 200, "ts": 1700000002},'
        b' {"lat": 3, "lon": 4, "ts": 1700000003}]',
    )
    wait_until(
        lambda: (
            positions_of(services.dsn, good) == len(cases)
            and positions_of(services.dsn, f"b{unique}") == 2
            and count_rows(
                services.dsn,
                "SELECT count(*) FROM dead_letters WHERE topic LIKE %s",
                (f"%b{unique}%",),
            )
            == len(cases) + 1
        ),
        timeout=30,
        what="good fixes and dead letters",
    )
    letters = fetch(
        db,
        "SELECT topic, payload, reason FROM dead_letters WHERE topic LIKE %s ORDER BY id",
        f"%b{unique}%",
    )
    for (topic, payload, code), (stored_topic, stored_payload, reason) in zip(
        cases, letters, strict=False
    ):
        assert stored_topic == topic
        assert as_bytes(stored_payload) == (payload or b"")
        assert str(reason).startswith(f"{code}: "), (code, reason)
    reasons = [str(r[2]) for r in letters]
    assert "`$.lat`" in reasons[4]
    assert "`lat`" in reasons[5]
    assert "`$.battery`" in reasons[7]
    assert reasons[-1].startswith("out_of_range: ")
    assert "`$[1].lon`" in reasons[-1]
    assert as_bytes(letters[-1][1]).startswith(b'[{"lat": 1')
    assert worker.alive()
    assert worker.metric("fleetpulse_ingest_invalid_total", 'reason="out_of_range"') == 3
    assert worker.metric("fleetpulse_ingest_invalid_total", 'reason="not_utf8"') == 1
    assert worker.metric("fleetpulse_ingest_dead_letters_total") == len(cases) + 1
    assert "unsupported type 'waypoint'" not in worker.log()  # not an error in the log


def test_redelivered_and_repeated_fixes_are_stored_once(
    services: Services, worker: Worker, unique: str
) -> None:
    source = f"d{unique}"
    fix = b'{"lat": 10, "lon": 20, "ts": 1700000100.25}'
    for _ in range(3):
        mosquitto_pub(services, f"fleet/vehicles/{source}/location", fix)
    mosquitto_pub(services, f"fleet/vehicles/{source}/location", b"[" + fix + b"," + fix + b"]")
    mosquitto_pub(
        services, f"fleet/couriers/{source}/presence", b'{"state":"busy","ts":1700000000}'
    )
    mosquitto_pub(
        services, f"fleet/couriers/{source}/presence", b'{"state":"busy","ts":1700000000}'
    )
    wait_until(
        lambda: worker.metric("fleetpulse_ingest_messages_received_total") >= 6,
        timeout=20,
        what="six messages",
    )
    assert positions_of(services.dsn, source) == 1
    assert (
        count_rows(services.dsn, "SELECT count(*) FROM events WHERE source_id = %s", (source,)) == 1
    )
    assert worker.metric("fleetpulse_ingest_duplicates_total", 'table="positions"') == 4
    assert worker.metric("fleetpulse_ingest_duplicates_total", 'table="events"') == 1


def test_message_with_mqtt5_properties_takes_the_full_paho_path(
    services: Services, worker: Worker, unique: str
) -> None:
    source = f"p{unique}"
    subprocess.run(
        [
            "mosquitto_pub",
            *services.mqtt_args("loadgen"),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            f"fleet/couriers/{source}/location",
            "-D",
            "publish",
            "user-property",
            "firmware",
            "1.2",
            "-D",
            "publish",
            "content-type",
            "application/json",
            "-m",
            '{"lat": 1.5, "lon": 2.5, "ts": 1700000000}',
        ],
        check=True,
        timeout=30,
    )
    wait_until(lambda: positions_of(services.dsn, source) == 1, timeout=20, what="the fix")


def test_sigterm_flushes_commits_and_acknowledges(services: Services, unique: str) -> None:
    source = f"t{unique}"
    group = f"g{unique}"
    # Batches that never fill and never age: only the shutdown can flush them.
    slow = {"FLEETPULSE_INGEST_BATCH_ROWS": "100000", "FLEETPULSE_INGEST_BATCH_AGE_MS": "60000"}
    with running_worker(services, group=group, extra_env=slow) as worker:
        publisher = LinePublisher(services, f"fleet/vehicles/{source}/location")
        try:
            publisher.send(fix_lines(1000, start=time.time() - 3600))
            wait_until(
                lambda: worker.metric("fleetpulse_ingest_pending_messages") == 1000,
                timeout=20,
                what="1000 pending messages",
            )
            assert positions_of(services.dsn, source) == 0
            assert worker.terminate() == 0
        finally:
            publisher.close()
        assert positions_of(services.dsn, source) == 1000
        # Everything was acknowledged: a new worker in the same session gets nothing again.
        restarted = Worker(services, group=group, client_id=worker.client_id)
        try:
            restarted.start()
            time.sleep(1.5)
            assert restarted.metric("fleetpulse_ingest_messages_received_total") == 0
        finally:
            restarted.close()
