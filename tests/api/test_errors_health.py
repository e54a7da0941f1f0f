"""One JSON error shape, 422 with field details, no stack traces; health, readiness, metrics."""

from __future__ import annotations

import time

from api import create_app
from auth import LocalVerifier
from stack.process import free_port
from tests.api.conftest import ApiServer, World, api_settings, serving
from tests.services import Services


def test_validation_errors_name_the_fields(world: World) -> None:
    response = world.admin.post(
        "/orders",
        json={
            "id": "bad id!",
            "restaurant_id": world.restaurant_id,
            "customer_uid": "",
            "pickup": {"lat": 91, "lon": 0},
            "dropoff": {"lat": 0, "lon": 0},
            "promised_at": "tomorrow",
            "surprise": 1,
        },
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid"
    fields = {d["field"] for d in error["details"]}
    assert fields == {
        "body.id",
        "body.customer_uid",
        "body.pickup.lat",
        "body.promised_at",
        "body.surprise",
    }
    assert all(d["message"] for d in error["details"])


def test_malformed_bodies_and_unknown_routes(world: World) -> None:
    cases = [
        world.admin.post(
            "/restaurants", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        world.admin.post("/restaurants", content=b"\xff\xfe", headers={"Content-Type": "x/y"}),
        world.admin.get("/no/such/route"),
        world.admin.put("/orders"),
        world.admin.get("/alerts/x/acknowledge"),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, response.text
        body = response.json()
        assert set(body) == {"error"}
        assert body["error"]["code"]
        assert "Traceback" not in response.text
        assert 'File "' not in response.text


def test_auth_failures(api_server: ApiServer) -> None:
    expired = api_server.signer.issue(uid="x", role="admin", ttl_s=-10)
    forged = api_server.token("admin")[:-4] + "AAAA"
    for headers in (
        {},
        {"Authorization": "Bearer " + expired},
        {"Authorization": forged},
        {"Authorization": "Bearer " + forged},
        {"Authorization": "Basic eDp5"},
    ):
        response = api_server.client().get("/orders", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_health_readiness_metrics(api_server: ApiServer) -> None:
    client = api_server.client()
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz").json()
    assert ready == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    client.get("/orders")
    time.sleep(0.05)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'fleetpulse_api_requests_total{method="GET",route="/orders",status="401"}' in (
        metrics.text
    )
    assert "fleetpulse_api_request_seconds_bucket" in metrics.text
    assert 'fleetpulse_api_errors_total{code="unauthorized"}' in metrics.text
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "fleetpulse API"


def test_not_ready_without_broker_or_database(services: Services) -> None:
    settings = api_settings(
        services,
        mqtt_port=free_port(),
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
    )
    app = create_app(settings, verifier=LocalVerifier.from_data_dir(services.root))
    with serving(app) as base_url:
        client = ApiServer(base_url, settings, None).client()  # type: ignore[arg-type]
        response = client.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["broker"].startswith("unavailable")
        assert checks["database"].startswith("unavailable")
        assert client.get("/healthz").status_code == 200
