"""The positions queries: how ingest writes fixes and how everyone else reads them.

`positions` is the hypertable of every fix; `last_positions` holds the newest fix (by fix
time) of each source. Ingest is their one writer (docs/architecture.md); the bridge, the
API, the workflow's ETA, tests and benchmarks read through the functions here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection, Connection
from psycopg.rows import tuple_row

POSITION_COLUMNS = (
    "source_kind, source_id, fix_time, lat, lon, speed, heading, accuracy, altitude, battery, "
    "received_at"
)
POSITION_TYPES = [
    "text",
    "text",
    "timestamptz",
    "float8",
    "float8",
    "float4",
    "float4",
    "float4",
    "float4",
    "float4",
    "timestamptz",
]
PositionRow = tuple[
    str,
    str,
    datetime,
    float,
    float,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    datetime,
]

COPY_POSITIONS = f"COPY positions ({POSITION_COLUMNS}) FROM STDIN (FORMAT BINARY)"
COPY_STAGE = f"COPY positions_stage ({POSITION_COLUMNS}) FROM STDIN (FORMAT BINARY)"
CREATE_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS positions_stage
    (LIKE positions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
INSERT_FROM_STAGE = f"""
INSERT INTO positions ({POSITION_COLUMNS})
SELECT {POSITION_COLUMNS} FROM positions_stage
ON CONFLICT (source_kind, source_id, fix_time) DO NOTHING
"""  # noqa: S608
_UNNEST_POSITION_ARRAYS = """
SELECT * FROM unnest(
    %s::text[], %s::text[], %s::timestamptz[], %s::float8[], %s::float8[], %s::float4[],
    %s::float4[], %s::float4[], %s::float4[], %s::float4[], %s::timestamptz[]
)
"""
# For writers without COPY (tests, one-by-one isolation): the same rows as arrays.
INSERT_POSITIONS = f"""
INSERT INTO positions ({POSITION_COLUMNS})
{_UNNEST_POSITION_ARRAYS}
ON CONFLICT (source_kind, source_id, fix_time) DO NOTHING
"""
UPSERT_LAST_POSITIONS = f"""
INSERT INTO last_positions AS lp ({POSITION_COLUMNS})
{_UNNEST_POSITION_ARRAYS}
ON CONFLICT (source_kind, source_id) DO UPDATE SET
    fix_time = excluded.fix_time, lat = excluded.lat, lon = excluded.lon,
    speed = excluded.speed, heading = excluded.heading, accuracy = excluded.accuracy,
    altitude = excluded.altitude, battery = excluded.battery,
    received_at = excluded.received_at
WHERE lp.fix_time < excluded.fix_time
"""


def as_columns(rows: Sequence[PositionRow]) -> list[list[Any]]:
    """The rows as one list per column, the parameters of INSERT_POSITIONS."""
    return [list(column) for column in zip(*rows, strict=True)] or [[] for _ in POSITION_TYPES]


def newest_per_source(rows: Sequence[PositionRow]) -> list[list[Any]]:
    """The newest row of each source, sorted by source, as columns for UPSERT_LAST_POSITIONS.

    Sorted so that two workers lock `last_positions` rows in the same order (no deadlock).
    """
    newest: dict[tuple[str, str], PositionRow] = {}
    for row in rows:
        key = (row[0], row[1])
        current = newest.get(key)
        if current is None or row[2] > current[2]:
            newest[key] = row
    return as_columns([newest[key] for key in sorted(newest)])


def write_positions(conn: Connection[Any], rows: Sequence[PositionRow]) -> None:
    """Store rows the way ingest does, without COPY: for tests, benchmarks and tools."""
    if not rows:
        return
    with conn.cursor() as cur:
        cur.execute(INSERT_POSITIONS, as_columns(rows))
        cur.execute(UPSERT_LAST_POSITIONS, newest_per_source(rows))


@dataclass(frozen=True, slots=True)
class LastPosition:
    source_kind: Literal["courier", "vehicle"]
    source_id: str
    fix_time: datetime
    lat: float
    lon: float
    speed: float | None
    heading: float | None


_LAST_POSITION_FIELDS = "source_kind, source_id, fix_time, lat, lon, speed, heading"


async def _fetch(
    conn: AsyncConnection[Any], query: str, params: tuple[object, ...]
) -> list[tuple[Any, ...]]:
    """Rows as tuples, whatever row factory the caller's connection has."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def read_last_positions(
    conn: AsyncConnection[Any],
    *,
    kind: str | None = None,
    source_ids: Collection[str] | None = None,
    limit: int = 50_000,
) -> list[LastPosition]:
    """The newest fix of each source, optionally of one kind and of the given ids only."""
    where, params = _source_filter(kind, source_ids)
    query = f"SELECT {_LAST_POSITION_FIELDS} FROM last_positions{where} LIMIT %s"  # noqa: S608
    return [LastPosition(*row) for row in await _fetch(conn, query, (*params, limit))]


async def read_last_position(
    conn: AsyncConnection[Any], *, kind: str, source_id: str
) -> LastPosition | None:
    found = await read_last_positions(conn, kind=kind, source_ids=(source_id,), limit=1)
    return found[0] if found else None


def _source_filter(
    kind: str | None, source_ids: Collection[str] | None
) -> tuple[str, tuple[object, ...]]:
    clauses: list[str] = []
    params: list[object] = []
    if kind is not None:
        clauses.append("source_kind = %s")
        params.append(kind)
    if source_ids is not None:
        clauses.append("source_id = ANY(%s)")
        params.append(list(source_ids))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


# The whole answer of GET /positions/latest is built by PostgreSQL as text: for 10,000
# sources that is several times faster than fetching rows and serialising them in Python,
# and faster than json_agg. Ids share the topic alphabet [A-Za-z0-9_-], so they need no
# JSON escaping. The session time zone must be UTC, so that `fix_time::text` + ':00' is
# RFC 3339 ("...T09:19:52.002+00:00"), twice as cheap as to_char.
LAST_POSITIONS_ROWS_SQL = """
SELECT convert_to(
    '{"count":' || count(*) || ',"items":[' || coalesce(string_agg(format(
        '{"source_kind":"%%s","source_id":"%%s","ts":"%%s","lat":%%s,"lon":%%s,'
        '"speed":%%s,"heading":%%s,"battery":%%s}',
        source_kind, source_id, replace(fix_time::text, ' ', 'T') || ':00', lat, lon,
        coalesce(speed::text, 'null'), coalesce(heading::text, 'null'),
        coalesce(battery::text, 'null')
    ), ',' ORDER BY source_kind, source_id), '') || ']}', 'UTF8')
FROM last_positions
"""
# The same as one array per field: half the bytes, and about half the database's work.
LAST_POSITIONS_COLUMNS_SQL = """
SELECT convert_to(json_build_object(
    'count', count(*), 'source_kind', coalesce(array_agg(source_kind), '{}'),
    'source_id', coalesce(array_agg(source_id), '{}'), 'ts', coalesce(array_agg(fix_time), '{}'),
    'lat', coalesce(array_agg(lat), '{}'), 'lon', coalesce(array_agg(lon), '{}'),
    'speed', coalesce(array_agg(speed), '{}'), 'heading', coalesce(array_agg(heading), '{}'),
    'battery', coalesce(array_agg(battery), '{}')
)::text, 'UTF8')
FROM (SELECT * FROM last_positions {where} ORDER BY source_kind, source_id) AS ordered
"""


def last_positions_document_query(
    *, kind: str | None, layout: Literal["rows", "columns"]
) -> tuple[str, tuple[object, ...]]:
    """The SQL and parameters that build the JSON document of every newest fix."""
    where, params = _source_filter(kind, None)
    if layout == "columns":
        return LAST_POSITIONS_COLUMNS_SQL.replace("{where}", where), params
    return LAST_POSITIONS_ROWS_SQL + where, params


async def last_positions_document(
    conn: AsyncConnection[Any], *, kind: str | None, layout: Literal["rows", "columns"]
) -> bytes:
    """`{"count", "items": [...]}` (rows) or one array per field (columns), as UTF-8 JSON."""
    sql, params = last_positions_document_query(kind=kind, layout=layout)
    cur = conn.cursor(binary=True)
    await cur.execute(sql, params)
    row = await cur.fetchone()
    assert row is not None  # an aggregate always returns one row
    return bytes(row[0])


TRACK_BUCKETS_SQL = """
SELECT time_bucket(make_interval(secs => %s), fix_time) AS bucket,
       last(lat, fix_time), last(lon, fix_time), avg(speed), count(*)
FROM positions
WHERE source_kind = %s AND source_id = %s AND fix_time >= %s AND fix_time < %s
GROUP BY bucket ORDER BY bucket
"""


async def track_buckets(
    conn: AsyncConnection[Any],
    *,
    kind: str,
    source_id: str,
    start: datetime,
    end: datetime,
    resolution_s: int,
) -> list[tuple[datetime, float, float, float | None, int]]:
    """One point per `resolution_s` bucket: the bucket, its last lat and lon, the mean
    speed and the fix count."""
    params = (resolution_s, kind, source_id, start, end)
    return await _fetch(conn, TRACK_BUCKETS_SQL, params)


async def track_fixes(
    conn: AsyncConnection[Any],
    *,
    kind: str,
    source_id: str,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[tuple[datetime, float, float, float | None, float | None]]:
    """The raw fixes in [start, end), oldest first: time, lat, lon, altitude, speed."""
    return await _fetch(
        conn,
        """
        SELECT fix_time, lat, lon, altitude, speed FROM positions
        WHERE source_kind = %s AND source_id = %s AND fix_time >= %s AND fix_time < %s
        ORDER BY fix_time LIMIT %s
        """,
        (kind, source_id, start, end, limit),
    )


async def recent_fixes(
    conn: AsyncConnection[Any],
    *,
    kind: str,
    source_id: str,
    after: datetime,
    until: datetime,
    limit: int,
) -> list[tuple[datetime, float, float, float | None]]:
    """The newest fixes in (after, until], newest first: time, lat, lon, speed."""
    return await _fetch(
        conn,
        """
        SELECT fix_time, lat, lon, speed FROM positions
        WHERE source_kind = %s AND source_id = %s AND fix_time > %s AND fix_time <= %s
        ORDER BY fix_time DESC LIMIT %s
        """,
        (kind, source_id, after, until, limit),
    )
