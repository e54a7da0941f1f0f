"""Storing fixes the way the ingest worker does: positions rows plus the last_positions
upsert (the API reads what ingest writes)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg


def store_fixes(
    conn: psycopg.Connection[Any],
    courier_id: str,
    fixes: Sequence[tuple[datetime, float, float, float | None]],
    *,
    kind: str = "courier",
) -> None:
    received = datetime.now(UTC)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO positions (source_kind, source_id, fix_time, lat, lon, speed,"
            " received_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(kind, courier_id, t, lat, lon, speed, received) for t, lat, lon, speed in fixes],
        )
        newest = max(fixes, key=lambda f: f[0])
        cur.execute(
            """
            INSERT INTO last_positions (source_kind, source_id, fix_time, lat, lon, speed,
                                        received_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (source_kind, source_id) DO UPDATE SET
                fix_time = excluded.fix_time, lat = excluded.lat, lon = excluded.lon,
                speed = excluded.speed, received_at = excluded.received_at
            WHERE last_positions.fix_time <= excluded.fix_time
            """,
            (kind, courier_id, *newest[:4], received),
        )
