"""Dashboard figures for a period, cheap enough to refresh every 5 s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.errors import ERROR_RESPONSES
from api.schemas import Analytics, FixCount
from api.security import AdminPrincipal
from api.state import InvalidValue, State
from store.presence import read_presence

router = APIRouter(responses=ERROR_RESPONSES, tags=["analytics"])

MAX_SPAN = timedelta(days=31)
MAX_SERIES_POINTS = 120

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


@router.get("/analytics")
async def analytics(
    state: State,
    _: AdminPrincipal,
    start: Annotated[datetime | None, Query(description="default: 1 h before end")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
) -> Analytics:
    """For the period: couriers online now (online or busy, by the same rules as
    `GET /couriers`) and active in it (by their newest fix), orders
    created by status, deliveries with average and p90 delivery time (created → delivered)
    and on-time rate (delivered by the promised time), and fixes per minute (by fix time)."""
    end = end or datetime.now(UTC)
    start = start or end - timedelta(hours=1)
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidValue("start and end need a UTC offset, e.g. 2026-01-01T12:00:00Z")
    if end <= start or end - start > MAX_SPAN:
        raise InvalidValue("end must be after start, and the period at most 31 days")
    span_s = (end - start).total_seconds()
    bucket_s = max(60, int(-(-span_s // MAX_SERIES_POINTS) + 59) // 60 * 60)
    params = {
        "start": start,
        "end": end,
        "bucket": bucket_s,
    }
    async with state.transaction() as conn:
        cur = await conn.execute(ORDERS_SQL, params)
        by_status, deliveries, avg_s, p90_s, on_time = await cur.fetchone() or (
            {},
            0,
            None,
            None,
            None,
        )
        cur = await conn.execute(COURIERS_ACTIVE_SQL, params)
        (active,) = await cur.fetchone() or (0,)
        presence = await read_presence(conn)
        cur = await conn.execute(FIXES_SQL, params)
        series = await cur.fetchall()
    total = sum(n for _, n in series)
    now, timeout_s = datetime.now(UTC), state.settings.presence_timeout_s
    online = sum(
        p.availability(now=now, timeout_s=timeout_s) != "offline" for p in presence.values()
    )
    return Analytics(
        start=start,
        end=end,
        couriers_online=online,
        couriers_active=active,
        orders_by_status=by_status,
        deliveries=deliveries,
        avg_delivery_s=float(avg_s) if avg_s is not None else None,
        p90_delivery_s=float(p90_s) if p90_s is not None else None,
        on_time_rate=float(on_time) if on_time is not None else None,
        fixes_total=total,
        fixes_per_minute=total / (span_s / 60),
        fixes_series_bucket_s=bucket_s,
        fixes_series=[FixCount(start=b, fixes=n) for b, n in series],
    )
