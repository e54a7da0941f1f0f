"""The API served by a real uvicorn on a free port, against the session's real Mosquitto and
PostgreSQL; tokens come from the local auth mode."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api import create_app
from auth import LocalSigner, LocalVerifier
from config import Settings, load_settings
from stack.process import free_port
from tests.services import Services


@dataclass
class ApiServer:
    base_url: str
    settings: Settings
    signer: LocalSigner

    def token(
        self,
        role: str,
        *,
        uid: str | None = None,
        courier_id: str | None = None,
        restaurant_id: str | None = None,
    ) -> str:
        return self.signer.issue(
            uid=uid or f"{role}-{uuid.uuid4().hex[:8]}",
            role=role,
            courier_id=courier_id,
            restaurant_id=restaurant_id,
        )

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=20)


def api_settings(services: Services, **overrides: Any) -> Settings:
    api = services.credentials("api")
    admin = services.credentials("admin")
    values: dict[str, Any] = {
        "mqtt_username": api.username,
        "mqtt_password": api.password,
        "mqtt_admin_username": admin.username,
        "mqtt_admin_password": admin.password,
        "topic_prefix": services.mosquitto.topic_prefix,
        "data_dir": services.root,
        "mqtt_host": services.mosquitto.host,
        "mqtt_port": services.mosquitto.port,
        "postgres_port": services.postgres.port,
        "database_url": services.dsn,
        "auth_mode": "local",
        "eta_interval_s": 0.5,
        "report_reorder_window_s": 0.5,
    }
    values.update(overrides)
    return load_settings(**values)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run the app in a real uvicorn on a free port (in a thread); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def api_server(services: Services) -> Iterator[ApiServer]:
    settings = api_settings(services)
    signer = LocalSigner.from_data_dir(services.root)
    app = create_app(settings, verifier=LocalVerifier.from_data_dir(services.root))
    with serving(app) as base_url:
        # Ready means the publisher reached the broker too.
        deadline = time.monotonic() + 30
        while httpx.get(f"{base_url}/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not become ready")
            time.sleep(0.1)
        yield ApiServer(base_url, settings, signer)


@dataclass
class World:
    """A restaurant, two couriers and helpers to make orders, all with unique ids."""

    api: ApiServer
    admin: httpx.Client
    restaurant_id: str
    courier_id: str
    other_courier_id: str
    customer_uid: str
    new_order: Callable[..., dict[str, Any]]

    def as_role(self, role: str) -> httpx.Client:
        """A client for a role, tied to this world's restaurant, courier and customer."""
        if role == "admin":
            return self.admin
        if role == "courier":
            token = self.api.token("courier", courier_id=self.courier_id)
        elif role == "restaurant":
            token = self.api.token("restaurant", restaurant_id=self.restaurant_id)
        else:
            token = self.api.token("customer", uid=self.customer_uid)
        return self.api.client(token)


@pytest.fixture
def world(api_server: ApiServer, unique: str) -> Iterator[World]:
    admin = api_server.client(api_server.token("admin"))
    restaurant_id, courier_id, other = f"r-{unique}", f"c-{unique}", f"c2-{unique}"
    assert (
        admin.post(
            "/restaurants", json={"id": restaurant_id, "name": "Pizza", "lat": 52.5, "lon": 13.4}
        ).status_code
        == 201
    )
    for cid in (courier_id, other):
        assert admin.post("/couriers", json={"id": cid, "name": "Bo"}).status_code == 201
    counter = iter(range(1_000_000))
    customer_uid = f"cust-{unique}"

    def new_order(*, assign: str | None = None, customer: str | None = None) -> dict[str, Any]:
        order_id = f"o-{unique}-{next(counter)}"
        response = admin.post(
            "/orders",
            json={
                "id": order_id,
                "restaurant_id": restaurant_id,
                "customer_uid": customer or customer_uid,
                "pickup": {"lat": 52.5, "lon": 13.4},
                "dropoff": {"lat": 52.52, "lon": 13.45},
                "promised_at": (datetime.now(UTC) + timedelta(minutes=30)).isoformat(),
            },
        )
        assert response.status_code == 201, response.text
        order: dict[str, Any] = response.json()
        if assign:
            response = admin.post(f"/orders/{order_id}/assignment", json={"courier_id": assign})
            assert response.status_code == 200, response.text
            order = response.json()
        return order

    try:
        yield World(api_server, admin, restaurant_id, courier_id, other, customer_uid, new_order)
    finally:
        admin.close()
