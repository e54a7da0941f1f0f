"""The dashboard's figures for a period: orders, deliveries, active couriers, fixes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

ORDERS_SQL = """
SELECT
    (SELECT coalesce(json_object_agg(status, n), '{}'::json)
       FROM (SELECT status, count(*) AS n FROM orders
             WHERE created_at >= %(start)s AND created_at < %(end)s GROUP BY status) s),
    count(*),
    avg(extract(epoch FROM delivered_at - created_at)),
    percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at)),
    avg((delivered_at <= promised_at)::int)
FROM orders
WHERE delivered_at >= %(start)s AND delivered_at < %(end)s
"""

COURIERS_ACTIVE_SQL = """
SELECT count(*) FROM last_positions
WHERE source_kind = 'courier' AND fix_time >= %(start)s AND fix_time < %(end)s
"""

FIXES_SQL = """
SELECT time_bucket(make_interval(secs => %(bucket)s), fix_time, %(start)s::timestamptz) AS b,
       count(*)
FROM positions
WHERE fix_time >= %(start)s AND fix_time < %(end)s
GROUP BY b ORDER BY b
"""


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    orders_by_status: dict[str, int]
    deliveries: int
    avg_delivery_s: float | None
    p90_delivery_s: float | None
    on_time_rate: float | None
    couriers_active: int
    fixes_series: list[tuple[datetime, int]]


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


async def read_period_figures(
    conn: AsyncConnection[Any], *, start: datetime, end: datetime, bucket_s: int
) -> PeriodFigures:
    """Orders created by status, deliveries (count, mean and p90 time, on-time rate),
    couriers whose newest fix is in the period, fixes per `bucket_s` bucket."""
    params = {"start": start, "end": end, "bucket": bucket_s}
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(ORDERS_SQL, params)
        by_status, deliveries, avg_s, p90_s, on_time = await cur.fetchone() or (
            {},
            0,
            None,
            None,
            None,
        )
        await cur.execute(COURIERS_ACTIVE_SQL, params)
        (active,) = await cur.fetchone() or (0,)
        await cur.execute(FIXES_SQL, params)
        series = [(bucket, count) for bucket, count in await cur.fetchall()]
    return PeriodFigures(
        orders_by_status=by_status,
        deliveries=deliveries,
        avg_delivery_s=_number(avg_s),
        p90_delivery_s=_number(p90_s),
        on_time_rate=_number(on_time),
        couriers_active=active,
        fixes_series=series,
    )
