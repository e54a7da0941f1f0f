"""Positions: where everyone is now (admin), one courier's downsampled track as JSON or
GeoJSON, and GPX export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from xml.sax.saxutils import escape

from fastapi import APIRouter, Path, Query, Response

from api.errors import ERROR_RESPONSES, NotFound
from api.schemas import (
    GeoJsonFeature,
    GeoJsonGeometry,
    LastPositions,
    LastPositionsColumns,
    Track,
    TrackPoint,
)
from api.security import AdminPrincipal, CurrentPrincipal, require
from api.state import ApiState, InvalidValue, State
from store.positions import last_positions_document, track_buckets, track_fixes

router = APIRouter(responses=ERROR_RESPONSES, tags=["positions"])

IdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]{1,64}$")]
MAX_TRACK_SPAN = timedelta(days=31)
MAX_TRACK_POINTS = 100_000


@router.get("/positions/latest", response_model=LastPositions | LastPositionsColumns)
async def last_positions(
    state: State,
    _: AdminPrincipal,
    kind: Annotated[Literal["courier", "vehicle"] | None, Query()] = None,
    layout: Annotated[
        Literal["rows", "columns"],
        Query(description="rows: one object per source; columns: one array per field"),
    ] = "rows",
) -> Response:
    """The last known position of every courier and vehicle (admin only), sorted by kind
    and id."""
    async with state.transaction() as conn:
        document = await last_positions_document(conn, kind=kind, layout=layout)
    return Response(content=document, media_type="application/json")


def _window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = end or datetime.now(UTC)
    start = start or end - timedelta(hours=24)
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidValue("start and end need a UTC offset, e.g. 2026-01-01T12:00:00Z")
    if end <= start:
        raise InvalidValue("end must be after start")
    if end - start > MAX_TRACK_SPAN:
        raise InvalidValue("a track spans at most 31 days; ask for several")
    return start, end


def _check_access(principal: Any, courier_id: str) -> None:
    require(principal, "admin", "courier")
    if principal.role == "courier" and principal.courier_id != courier_id:
        raise NotFound(f"courier {courier_id!r} not found")


async def _track_rows(
    state: ApiState, courier_id: str, start: datetime, end: datetime, resolution_s: int
) -> list[tuple[datetime, float, float, float | None, int]]:
    async with state.transaction() as conn:
        return await track_buckets(
            conn,
            kind="courier",
            source_id=courier_id,
            start=start,
            end=end,
            resolution_s=resolution_s,
        )


@router.get("/couriers/{courier_id}/track", response_model=Track | GeoJsonFeature)
async def track(
    courier_id: IdPath,
    state: State,
    principal: CurrentPrincipal,
    start: Annotated[datetime | None, Query(description="default: 24 h before end")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
    resolution_s: Annotated[int, Query(ge=1, le=86_400)] = 60,
    format: Annotated[Literal["json", "geojson"], Query()] = "json",
) -> Track | GeoJsonFeature:
    """A courier's track between two times, one point per `resolution_s` bucket
    (TimescaleDB `time_bucket`; the bucket's last fix, its mean speed and fix count).
    Admins read any courier, a courier their own."""
    _check_access(principal, courier_id)
    start, end = _window(start, end)
    if (end - start).total_seconds() / resolution_s > MAX_TRACK_POINTS:
        raise InvalidValue(f"at most {MAX_TRACK_POINTS} buckets; raise resolution_s")
    rows = await _track_rows(state, courier_id, start, end, resolution_s)
    if format == "geojson":
        return GeoJsonFeature(
            type="Feature",
            geometry=GeoJsonGeometry(type="LineString", coordinates=[[r[2], r[1]] for r in rows]),
            properties={
                "courier_id": courier_id,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "resolution_s": resolution_s,
                "times": [r[0].isoformat() for r in rows],
            },
        )
    return Track(
        courier_id=courier_id,
        start=start,
        end=end,
        resolution_s=resolution_s,
        points=[TrackPoint(ts=r[0], lat=r[1], lon=r[2], speed=r[3], fixes=r[4]) for r in rows],
    )


@router.get(
    "/couriers/{courier_id}/track.gpx",
    response_class=Response,
    responses={200: {"content": {"application/gpx+xml": {"schema": {"type": "string"}}}}},
)
async def track_gpx(
    courier_id: IdPath,
    state: State,
    principal: CurrentPrincipal,
    start: Annotated[datetime | None, Query(description="default: 24 h before end")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
) -> Response:
    """The raw fixes of a courier between two times as GPX 1.1 (at most 100,000 points)."""
    _check_access(principal, courier_id)
    start, end = _window(start, end)
    async with state.transaction() as conn:
        rows = await track_fixes(
            conn,
            kind="courier",
            source_id=courier_id,
            start=start,
            end=end,
            limit=MAX_TRACK_POINTS,
        )
    points = []
    for ts, lat, lon, altitude, speed in rows:
        ele = f"<ele>{altitude:.1f}</ele>" if altitude is not None else ""
        extension = (
            f"<extensions><speed>{speed:.2f}</speed></extensions>" if speed is not None else ""
        )
        stamp = ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        points.append(
            f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}">{ele}<time>{stamp}</time>{extension}</trkpt>'
        )
    name = escape(f"courier {courier_id} {start.isoformat()} - {end.isoformat()}")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="fleetpulse" xmlns="http://www.topografix.com/GPX/1/1">'
        f"<trk><name>{name}</name><trkseg>{''.join(points)}</trkseg></trk></gpx>\n"
    )
    return Response(
        content=body,
        media_type="application/gpx+xml",
        headers={"Content-Disposition": f'attachment; filename="{courier_id}.gpx"'},
    )
