"""Emergency alerts: a courier raises one, admins see it at once and acknowledge it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from psycopg.rows import dict_row

from api.announcements import announce_alert
from api.errors import ERROR_RESPONSES, Conflict, NotFound
from api.schemas import Alert, AlertIn, AlertList
from api.security import AdminPrincipal, CurrentPrincipal, require
from api.state import State

router = APIRouter(responses=ERROR_RESPONSES, tags=["alerts"])

ALERT_COLUMNS = "id, courier_id, raised_at, lat, lon, message, acknowledged_by, acknowledged_at"


@router.post("/alerts", status_code=201)
async def raise_alert(body: AlertIn, state: State, principal: CurrentPrincipal) -> Alert:
    """A courier raises an emergency (also possible over MQTT on
    `fleet/couriers/{id}/emergency`). It is stored and announced to admins at once."""
    require(principal, "courier")
    courier_id = principal.courier_id or ""
    if body.courier_id is not None and body.courier_id != courier_id:
        raise NotFound(f"courier {body.courier_id!r} not found")
    now = datetime.now(UTC)
    async with state.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            INSERT INTO alerts (courier_id, raised_at, lat, lon, message)
            VALUES (%s, %s, %s, %s, %s) RETURNING {ALERT_COLUMNS}
            """,  # noqa: S608
            (courier_id, now, body.lat, body.lon, body.message),
        )
        alert = await cur.fetchone()
        assert alert is not None
        await announce_alert(conn, state.settings.topic_prefix, alert, kind="alert_raised")
    return Alert(**alert)


@router.get("/alerts")
async def list_alerts(
    state: State,
    _: AdminPrincipal,
    status: Annotated[Literal["open", "all"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    """Open alerts (default), newest first; `status=all` includes acknowledged ones."""
    where = "WHERE acknowledged_at IS NULL" if status == "open" else ""
    async with state.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts {where} ORDER BY raised_at DESC LIMIT %s",  # noqa: S608
            (limit,),
        )
        rows: list[dict[str, Any]] = await cur.fetchall()
    return AlertList(items=[Alert(**r) for r in rows])


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge_alert(
    alert_id: Annotated[int, Path(ge=1, le=2**62)], state: State, principal: AdminPrincipal
) -> Alert:
    """An admin acknowledges an open alert; who and when are recorded."""
    async with state.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = %s FOR UPDATE",  # noqa: S608
            (alert_id,),
        )
        alert = await cur.fetchone()
        if alert is None:
            raise NotFound(f"alert {alert_id} not found")
        if alert["acknowledged_at"] is not None:
            raise Conflict(
                f"alert {alert_id} was already acknowledged by {alert['acknowledged_by']}"
                f" at {alert['acknowledged_at'].isoformat()}"
            )
        await cur.execute(
            f"""
            UPDATE alerts SET acknowledged_by = %s, acknowledged_at = now()
            WHERE id = %s RETURNING {ALERT_COLUMNS}
            """,  # noqa: S608
            (principal.uid, alert_id),
        )
        alert = await cur.fetchone()
        assert alert is not None
        await announce_alert(conn, state.settings.topic_prefix, alert, kind="alert_acknowledged")
    return Alert(**alert)
