"""Emergency alerts: a courier raises one, admins see it at once and acknowledge it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from api.announcements import announce_alert
from api.errors import ERROR_RESPONSES, Conflict, NotFound
from api.schemas import Alert, AlertIn, AlertList
from api.security import AdminPrincipal, CurrentPrincipal, require
from api.state import State
from store import alerts as store
from store.alerts import AlertRow

router = APIRouter(responses=ERROR_RESPONSES, tags=["alerts"])


def alert_out(row: AlertRow) -> Alert:
    return Alert(**asdict(row))


@router.post("/alerts", status_code=201)
async def raise_alert(body: AlertIn, state: State, principal: CurrentPrincipal) -> Alert:
    """A courier raises an emergency (also possible over MQTT on
    `fleet/couriers/{id}/emergency`). It is stored and announced to admins at once."""
    require(principal, "courier")
    courier_id = principal.courier_id or ""
    if body.courier_id is not None and body.courier_id != courier_id:
        raise NotFound(f"courier {body.courier_id!r} not found")
    now = datetime.now(UTC)
    async with state.transaction() as conn:
        alert = await store.insert_alert(
            conn,
            courier_id=courier_id,
            raised_at=now,
            lat=body.lat,
            lon=body.lon,
            message=body.message,
        )
        await announce_alert(conn, state.settings.topic_prefix, alert, kind="alert_raised")
    return alert_out(alert)


@router.get("/alerts")
async def list_alerts(
    state: State,
    _: AdminPrincipal,
    status: Annotated[Literal["open", "all"], Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    """Open alerts (default), newest first; `status=all` includes acknowledged ones."""
    async with state.transaction() as conn:
        rows = await store.list_alerts(conn, open_only=status == "open", limit=limit)
    return AlertList(items=[alert_out(r) for r in rows])


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge_alert(
    alert_id: Annotated[int, Path(ge=1, le=2**62)], state: State, principal: AdminPrincipal
) -> Alert:
    """An admin acknowledges an open alert; who and when are recorded."""
    async with state.transaction() as conn:
        alert = await store.lock_alert(conn, alert_id)
        if alert is None:
            raise NotFound(f"alert {alert_id} not found")
        if alert.acknowledged_at is not None:
            raise Conflict(
                f"alert {alert_id} was already acknowledged by {alert.acknowledged_by}"
                f" at {alert.acknowledged_at.isoformat()}"
            )
        alert = await store.acknowledge(conn, alert_id, by=principal.uid)
        await announce_alert(conn, state.settings.topic_prefix, alert, kind="alert_acknowledged")
    return alert_out(alert)
