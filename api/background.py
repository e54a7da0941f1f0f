"""The API's background work: ETA recomputation from new fixes, and position retention."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.announcements import announce_order_event
from api.metrics import ETA_RECOMPUTED, RETENTION_DROPPED
from api.state import ApiState
from workflow import compute_eta
from workflow.orders import ORDER_COLUMNS

log = logging.getLogger("api.background")

# Orders whose courier sent a fix since their ETA was computed, at most once per interval.
# SKIP LOCKED lets several API instances share the work without doing it twice.
DUE_ORDERS_SQL = f"""
SELECT {", ".join("o." + c.strip() for c in ORDER_COLUMNS.split(","))}
FROM orders o
JOIN last_positions lp ON lp.source_kind = 'courier' AND lp.source_id = o.courier_id
WHERE o.status IN ('assigned', 'picked_up', 'out_for_delivery')
  AND (o.eta_computed_at IS NULL
       OR (lp.received_at > o.eta_computed_at
           AND o.eta_computed_at <= now() - make_interval(secs => %s)))
ORDER BY o.eta_computed_at NULLS FIRST
LIMIT 500
FOR UPDATE OF o SKIP LOCKED
"""  # noqa: S608
# An ETA that moved less than this is stored but not announced again.
ETA_ANNOUNCE_THRESHOLD = timedelta(seconds=5)


async def refresh_etas_once(state: ApiState) -> int:
    """Recompute the ETA of every due order; publish those that moved. Returns how many."""
    prefix = state.settings.topic_prefix
    async with state.pool.connection() as conn, conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(DUE_ORDERS_SQL, (state.settings.eta_interval_s,))
            orders = await cur.fetchall()
        now = datetime.now(UTC)
        for order in orders:
            eta = await compute_eta(conn, order=order, params=state.eta_params)
            old = order["eta"]
            moved = eta is not None and (old is None or abs(eta - old) >= ETA_ANNOUNCE_THRESHOLD)
            # Only an announced change is a new version; a silent recomputation is not.
            await conn.execute(
                "UPDATE orders SET eta = %s, eta_computed_at = now(),"
                " version = version + %s WHERE id = %s",
                (eta, 1 if moved else 0, order["id"]),
            )
            if moved:
                await announce_order_event(
                    conn,
                    prefix,
                    {**order, "eta": eta, "version": order["version"] + 1},
                    event="eta",
                    previous_status=order["status"],
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
