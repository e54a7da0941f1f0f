"""Retention drops whole chunks of old positions and keeps the new ones."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from api.background import drop_old_positions, retention_policy_available
from tests.api.fixes import store_fixes
from tests.services import Services


def chunks(db: psycopg.Connection[Any]) -> list[tuple[datetime, datetime]]:
    rows = db.execute(
        "SELECT range_start, range_end FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'positions' ORDER BY range_start"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def _drop(dsn: str, days: float) -> tuple[bool, list[str]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await retention_policy_available(conn), await drop_old_positions(conn, days)


def test_retention_drops_old_chunks_keeps_new(
    services: Services, db: psycopg.Connection[Any], unique: str
) -> None:
    now = datetime.now(UTC)
    source = f"ret-{unique}"
    ages_days = [200, 120, 95, 89, 10, 0]
    store_fixes(db, source, [(now - timedelta(days=d), 52.5, 13.4, 1.0) for d in ages_days])
    old_chunks = [c for c in chunks(db) if c[1] <= now - timedelta(days=90)]
    assert len(old_chunks) >= 3

    policy, dropped = asyncio.run(_drop(services.dsn, 90))
    # The Apache edition has no retention policy: the API's periodic task does the work.
    assert policy is False
    assert len(dropped) == len(old_chunks)
    assert all(c[1] > now - timedelta(days=90) for c in chunks(db))
    kept = db.execute(
        "SELECT fix_time FROM positions WHERE source_id = %s ORDER BY fix_time", (source,)
    ).fetchall()
    # The fix 89 days old survives, and so does its chunk even where it began before the cut.
    assert [round((now - r[0]).total_seconds() / 86400) for r in kept] == [89, 10, 0]
