"""Liveness, readiness (database and broker) and Prometheus metrics; no token needed."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.metrics import REGISTRY
from api.schemas import Health
from api.state import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get(
    "/readyz", response_model=Health, responses={503: {"model": Health, "description": "not ready"}}
)
async def readyz(state: State) -> JSONResponse:
    """Ready when the database answers and the outbox relay reaches the broker (or another
    API instance relays, or the relay is switched off here)."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with state.pool.connection() as conn:
                await conn.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
    relay = state.relay
    if not state.settings.outbox_relay or relay.connected or relay.standing_by:
        checks["broker"] = "ok"
    else:
        checks["broker"] = "unavailable: the outbox relay is not connected"
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
