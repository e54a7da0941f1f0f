"""The FastAPI application: routes, error shape, metrics, and the lifespan that owns the
database pool, the outbox relay, the report applier and the background tasks."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.background import eta_loop, retention_loop
from api.errors import install_error_handlers
from api.metrics import LATENCY, REQUESTS
from api.outbox_relay import OutboxRelay
from api.reports import report_applier_loop
from api.routes import alerts, analytics, devices, fleet, health, orders, positions
from api.state import ApiState
from auth import Verifier, build_verifier
from config import Settings
from workflow import EtaParameters

log = logging.getLogger("api")

DESCRIPTION = """
REST API of fleetpulse: restaurants, couriers and vehicles; device credentials; orders,
assignment and the delivery status workflow; ETA; positions and tracks; emergency alerts;
analytics. Every route except the health ones needs `Authorization: Bearer <Firebase ID
token>` (a local-mode token in development). Errors always look like
`{"error": {"code": ..., "message": ..., "details": [...]}}`.
"""


async def _configure(conn: AsyncConnection[Any]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.commit()


def create_app(
    settings: Settings, *, verifier: Verifier | None = None, background: bool = True
) -> FastAPI:
    """The API for these settings. `background=False` leaves out the periodic tasks (ETA
    refresh, retention) so a test can run them by hand."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            settings.dsn,
            min_size=1,
            max_size=settings.api_db_pool_size,
            configure=_configure,
            open=False,
            name="api",
        )
        await pool.open(wait=False)
        relay = OutboxRelay(
            settings, client_id=f"fleetpulse-api-{socket.gethostname()}-{os.getpid()}"
        )
        state = ApiState(
            settings=settings,
            pool=pool,
            relay=relay,
            eta_params=EtaParameters(
                default_speed_mps=settings.eta_default_speed_mps,
                detour_factor=settings.eta_detour_factor,
            ),
        )
        app.state.api = state
        try:
            async with asyncio.TaskGroup() as tasks:
                running = []
                if settings.outbox_relay:
                    running.append(tasks.create_task(relay.run(), name="outbox-relay"))
                if settings.report_applier:
                    running.append(
                        tasks.create_task(report_applier_loop(state), name="report-applier")
                    )
                if background:
                    running.append(tasks.create_task(eta_loop(state), name="eta-refresh"))
                    running.append(tasks.create_task(retention_loop(state), name="retention"))
                yield
                # Requests are drained by uvicorn; what they committed goes out before we
                # stop (and the next relay publishes whatever is left).
                if settings.outbox_relay and not await relay.drained(settings.api_drain_timeout_s):
                    log.warning("stopping with announcements still in the outbox")
                for task in running:
                    task.cancel()
        finally:
            await pool.close()

    app = FastAPI(
        title="fleetpulse API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.verifier = verifier if verifier is not None else build_verifier(settings)
    install_error_handlers(app)

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        REQUESTS.labels(template, request.method, str(response.status_code)).inc()
        LATENCY.labels(template).observe(time.perf_counter() - started)
        return response

    for module in (health, fleet, devices, orders, positions, alerts, analytics):
        app.include_router(module.router)
    return app


__all__ = ["create_app"]
