from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from store import apply_migrations
from store.migrate import available_migrations
from tests.services import Services

Conn = psycopg.Connection[tuple[object, ...]]


def test_positions_and_events_are_hypertables(db: Conn) -> None:
    rows = db.execute(
        "SELECT hypertable_name FROM timescaledb_information.hypertables ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rows] == ["events", "positions"]


def test_time_bucket_on_positions(db: Conn, unique: str) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        ("courier", f"c-{unique}", start + timedelta(seconds=10 * i), 52.5, 13.4, start)
        for i in range(30)
    ]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO positions (source_kind, source_id, fix_time, lat, lon, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )
    buckets = db.execute(
        "SELECT time_bucket('1 minute', fix_time) AS b, count(*) FROM positions"
        " WHERE source_kind = 'courier' AND source_id = %s GROUP BY b ORDER BY b",
        (f"c-{unique}",),
    ).fetchall()
    assert [count for _, count in buckets] == [6, 6, 6, 6, 6]
    assert buckets[0][0] == start


def test_time_bucket_on_events(db: Conn, unique: str) -> None:
    start = datetime(2026, 2, 1, tzinfo=UTC)
    for i in range(4):
        db.execute(
            "INSERT INTO events (event_time, kind, source_kind, source_id, dedup_key)"
            " VALUES (%s, 'presence', 'courier', %s, %s)",
            (start + timedelta(minutes=20 * i), f"c-{unique}", f"presence:{unique}:{i}"),
        )
    buckets = db.execute(
        "SELECT time_bucket('1 hour', event_time) AS b, count(*) FROM events"
        " WHERE source_id = %s GROUP BY b ORDER BY b",
        (f"c-{unique}",),
    ).fetchall()
    assert [count for _, count in buckets] == [3, 1]


def test_duplicate_fix_is_rejected_by_the_unique_key(db: Conn, unique: str) -> None:
    now = datetime.now(UTC)
    insert = (
        "INSERT INTO positions (source_kind, source_id, fix_time, lat, lon, received_at)"
        " VALUES ('courier', %s, %s, 1, 1, %s)"
    )
    db.execute(insert, (f"c-{unique}", now, now))
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(insert, (f"c-{unique}", now, now))


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("lat", 90.5),
        ("lon", -180.5),
        ("speed", -1.0),
        ("heading", 360.0),
        ("battery", 101.0),
        ("accuracy", -3.0),
        ("fix_time", datetime(1999, 12, 31, tzinfo=UTC)),
        # The id's alphabet is the topic parser's (ingest is the one writer); the table
        # checks the length only (store/migrations/0050_positions_source_id_text.sql).
        ("source_id", ""),
        ("source_id", "x" * 65),
        ("source_kind", "drone"),
    ],
)
def test_impossible_position_values_are_rejected(db: Conn, column: str, value: object) -> None:
    row: dict[str, object] = {
        "source_kind": "courier",
        "source_id": "c-1",
        "fix_time": datetime(2026, 3, 1, tzinfo=UTC),
        "lat": 1.0,
        "lon": 1.0,
        "received_at": datetime.now(UTC),
    }
    row[column] = value
    columns = ", ".join(row)
    placeholders = ", ".join(f"%({name})s" for name in row)
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(f"INSERT INTO positions ({columns}) VALUES ({placeholders})", row)  # noqa: S608


def test_order_rules(db: Conn, unique: str) -> None:
    db.execute("INSERT INTO restaurants (id, name, lat, lon) VALUES (%s, 'R', 1, 1)", (unique,))
    insert = (
        "INSERT INTO orders (id, restaurant_id, customer_uid, pickup_lat, pickup_lon,"
        " dropoff_lat, dropoff_lon, promised_at, status)"
        " VALUES (%s, %s, 'alice', 1, 1, 2, 2, now(), %s)"
    )
    db.execute(insert, (f"o-{unique}", unique, "pending"))
    with pytest.raises(psycopg.errors.CheckViolation):  # assigned needs a courier
        db.execute(insert, (f"o2-{unique}", unique, "assigned"))
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(insert, (f"o3-{unique}", unique, "teleported"))


def test_indexes_for_last_position_and_track(db: Conn) -> None:
    # Whether an index serves the query, not whether the planner prefers a sequential scan
    # of a chunk that other tests left with a handful of rows.
    db.execute("SET enable_seqscan = off")
    plan = db.execute(
        "EXPLAIN SELECT * FROM positions WHERE source_kind = 'courier' AND source_id = 'c-1'"
        " AND fix_time BETWEEN now() - interval '1 day' AND now()"
    ).fetchall()
    assert "positions_source_time" in "\n".join(str(line[0]) for line in plan) or any(
        "Index" in str(line[0]) for line in plan
    )
    key = db.execute(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'last_positions'"
    ).fetchall()
    assert any("(source_kind, source_id)" in str(row[0]) for row in key)


def test_migrations_are_idempotent(services: Services, db: Conn) -> None:
    assert apply_migrations(services.dsn) == []
    versions = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert [v[0] for v in versions] == [m.version for m in available_migrations()]
