"""The bridge's ASGI application: /ws, /metrics, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from auth import Verifier, build_verifier
from bridge.client import ClientLimits
from bridge.hub import Hub
from bridge.metrics import BridgeMetrics, probe_loop_lag
from bridge.mqtt import MqttRelay
from bridge.orders import OrderDirectory
from bridge.session import Session, SessionLimits
from bridge.snapshots import Snapshots
from bridge.subscriptions import SubscriptionManager
from bridge.topics import Topics
from broker.accounts import process_credentials
from config import Settings

DASHBOARD = Path(__file__).parent / "static" / "dashboard.html"

log = logging.getLogger("bridge")

CACHE_SWEEP_INTERVAL_S = 30.0


def presence_check_interval(settings: Settings) -> float:
    """How often silent couriers are looked for: a tenth of the timeout, at most 1 s."""
    return min(1.0, settings.presence_timeout_s / 10)


def create_app(settings: Settings, *, verifier: Verifier | None = None) -> Starlette:
    """The bridge. The verifier is built (and the auth settings checked) and the MQTT account
    resolved right here, so a misconfigured process refuses to start."""
    verifier = verifier or build_verifier(settings)
    # The broker refuses anonymous clients: no account, no start (CredentialsError says why).
    credentials = process_credentials(settings, account="bridge")
    metrics = BridgeMetrics()
    metrics.watch_gc()
    session_limits = SessionLimits(
        auth_timeout_s=settings.bridge_auth_timeout_s,
        reauth_grace_s=settings.bridge_reauth_grace_s,
        max_frame_bytes=settings.bridge_max_frame_bytes,
        max_frames_per_s=settings.bridge_max_frames_per_s,
        max_forbidden=settings.bridge_max_forbidden,
    )
    client_limits = ClientLimits(event_queue=settings.bridge_event_queue)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        topics = Topics(settings.topic_prefix)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.dsn, min_size=1, max_size=8, open=False, name="bridge"
        )
        await pool.open(wait=False)
        subscriptions = SubscriptionManager(
            topics=topics, metrics=metrics, linger_s=settings.bridge_unsubscribe_linger_s
        )
        hub = Hub(
            topics=topics,
            orders=OrderDirectory(pool),
            snapshots=Snapshots(pool),
            subscriptions=subscriptions,
            metrics=metrics,
            max_future_skew_s=settings.max_future_skew_s,
            presence_timeout_s=settings.presence_timeout_s,
        )
        relay = MqttRelay(
            settings=settings,
            subscriptions=subscriptions,
            on_message=hub.on_message,
            metrics=metrics,
            credentials=credentials,
        )
        state.update(hub=hub, relay=relay, pool=pool)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(relay.run(), name="mqtt-relay"),
                    group.create_task(subscriptions.run(), name="mqtt-subscriptions"),
                    group.create_task(
                        hub.run_fleet_batcher(settings.bridge_fleet_batch_ms / 1000),
                        name="fleet-batcher",
                    ),
                    group.create_task(hub.run_catch_up(), name="position-catch-up"),
                    group.create_task(probe_loop_lag(hub.metrics), name="loop-lag-probe"),
                    group.create_task(
                        hub.run_presence_timeouts(presence_check_interval(settings)),
                        name="presence-timeouts",
                    ),
                    group.create_task(
                        hub.run_cache_sweeper(CACHE_SWEEP_INTERVAL_S), name="order-cache-sweeper"
                    ),
                ]
                yield
                for task in tasks:
                    task.cancel()
        finally:
            await pool.close()

    async def websocket_endpoint(websocket: WebSocket) -> None:
        session = Session(
            websocket=websocket,
            hub=state["hub"],
            verifier=verifier,
            metrics=metrics,
            limits=session_limits,
            client_limits=client_limits,
        )
        await session.run()

    async def metrics_endpoint(_request: Request) -> Response:
        body = generate_latest(metrics.registry)
        metrics.loop_lag_peak = 0.0
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        problems: list[str] = []
        if not state["relay"].connected:
            problems.append("mqtt: not connected")
        try:
            async with state["pool"].connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            problems.append(f"database: {exc}")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    dashboard_page = DASHBOARD.read_text(encoding="utf-8")

    async def dashboard(_request: Request) -> Response:
        return HTMLResponse(dashboard_page)

    app = Starlette(
        routes=[
            Route("/", dashboard),
            WebSocketRoute("/ws", websocket_endpoint),
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.bridge = state
    return app
