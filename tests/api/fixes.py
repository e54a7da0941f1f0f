"""Storing fixes for API tests with the store's own positions writes (the API reads what
ingest writes)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from store.positions import PositionRow, write_positions


def store_fixes(
    conn: psycopg.Connection[Any],
    courier_id: str,
    fixes: Sequence[tuple[datetime, float, float, float | None]],
    *,
    kind: str = "courier",
) -> None:
    received = datetime.now(UTC)
    rows: list[PositionRow] = [
        (kind, courier_id, t, lat, lon, speed, None, None, None, None, received)
        for t, lat, lon, speed in fixes
    ]
    write_positions(conn, rows)
