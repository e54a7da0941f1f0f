"""Dashboard figures for a period, cheap enough to refresh every 5 s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.errors import ERROR_RESPONSES
from api.schemas import Analytics, FixCount
from api.security import AdminPrincipal
from api.state import InvalidValue, State
from store.analytics import read_period_figures
from store.presence import read_presence

router = APIRouter(responses=ERROR_RESPONSES, tags=["analytics"])

MAX_SPAN = timedelta(days=31)
MAX_SERIES_POINTS = 120


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
    async with state.transaction() as conn:
        figures = await read_period_figures(conn, start=start, end=end, bucket_s=bucket_s)
        presence = await read_presence(conn)
    series = figures.fixes_series
    total = sum(n for _, n in series)
    now, timeout_s = datetime.now(UTC), state.settings.presence_timeout_s
    online = sum(
        p.availability(now=now, timeout_s=timeout_s) != "offline" for p in presence.values()
    )
    return Analytics(
        start=start,
        end=end,
        couriers_online=online,
        couriers_active=figures.couriers_active,
        orders_by_status=figures.orders_by_status,
        deliveries=figures.deliveries,
        avg_delivery_s=figures.avg_delivery_s,
        p90_delivery_s=figures.p90_delivery_s,
        on_time_rate=figures.on_time_rate,
        fixes_total=total,
        fixes_per_minute=total / (span_s / 60),
        fixes_series_bucket_s=bucket_s,
        fixes_series=[FixCount(start=b, fixes=n) for b, n in series],
    )
