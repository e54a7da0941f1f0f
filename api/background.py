"""The API's background work: ETA recomputation from new fixes, and position retention."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection

from api.announcements import announce_order_event
from api.metrics import ETA_RECOMPUTED, RETENTION_DROPPED
from api.state import ApiState
from store import orders as store
from workflow import compute_eta

log = logging.getLogger("api.background")

# An ETA that moved less than this is stored but not announced again.
ETA_ANNOUNCE_THRESHOLD = timedelta(seconds=5)


async def refresh_etas_once(state: ApiState) -> int:
    """Recompute the ETA of every due order; publish those that moved. Returns how many."""
    prefix = state.settings.topic_prefix
    async with state.pool.connection() as conn, conn.transaction():
        orders = await store.due_for_eta(conn, interval_s=state.settings.eta_interval_s)
        now = datetime.now(UTC)
        for order in orders:
            eta = await compute_eta(conn, order=order, params=state.eta_params)
            old = order.eta
            moved = eta is not None and (old is None or abs(eta - old) >= ETA_ANNOUNCE_THRESHOLD)
            # Only an announced change is a new version; a silent recomputation is not.
            await store.set_eta(conn, order.id, eta, new_version=moved)
            if moved:
                await announce_order_event(
                    conn,
                    prefix,
                    order.replace(eta=eta, version=order.version + 1),
                    event="eta",
                    previous_status=order.status,
                    ts=now,
                    actor="system",
                )
    ETA_RECOMPUTED.inc(len(orders))
    return len(orders)


async def eta_loop(state: ApiState) -> None:
    period = max(0.5, state.settings.eta_interval_s / 2)
    while True:
        try:
            await refresh_etas_once(state)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("ETA refresh failed, retrying in %.1f s: %s", period, exc)
        await asyncio.sleep(period)


async def retention_policy_available(conn: AsyncConnection[Any]) -> bool:
    """Whether this TimescaleDB has background retention policies (not the Apache edition)."""
    cur = await conn.execute("SELECT current_setting('timescaledb.license', true)")
    row = await cur.fetchone()
    return row is not None and row[0] == "timescale"


async def install_retention_policy(conn: AsyncConnection[Any], days: float) -> None:
    await conn.execute(
        "SELECT add_retention_policy('positions', make_interval(secs => %s),"
        " if_not_exists => true)",
        (days * 86_400,),
    )


async def drop_old_positions(conn: AsyncConnection[Any], days: float) -> list[str]:
    """Drop every positions chunk whose data is all older than `days`; returns their names."""
    cur = await conn.execute(
        "SELECT drop_chunks('positions', older_than => now() - make_interval(secs => %s))",
        (days * 86_400,),
    )
    dropped = [row[0] for row in await cur.fetchall()]
    RETENTION_DROPPED.inc(len(dropped))
    if dropped:
        log.info("retention dropped %d position chunks: %s", len(dropped), ", ".join(dropped))
    return dropped


async def retention_loop(state: ApiState) -> None:
    days = state.settings.positions_retention_days
    async with state.pool.connection() as conn:
        if await retention_policy_available(conn):
            await install_retention_policy(conn, days)
            log.info("retention: TimescaleDB policy installed (%.0f days)", days)
            return
    log.info(
        "retention: Apache TimescaleDB has no policies; dropping chunks every %.0f s",
        state.settings.retention_interval_s,
    )
    while True:
        try:
            async with state.pool.connection() as conn:
                await drop_old_positions(conn, days)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("retention run failed, retrying next period: %s", exc)
        await asyncio.sleep(state.settings.retention_interval_s)
