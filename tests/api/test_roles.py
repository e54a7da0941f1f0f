"""Every route with every role, including the forbidden ones (table-driven)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.conftest import World

ROLES = (
    "anonymous",
    "customer",
    "other_customer",
    "restaurant",
    "other_restaurant",
    "courier",
    "other_courier",
    "admin",
)


@dataclass
class Call:
    method: str
    path: str
    body: Callable[[], Any] | None
    expect: dict[str, int]


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _order_body(world: World, restaurant_id: str) -> Callable[[], Any]:
    return lambda: {
        "id": _fresh("o"),
        "restaurant_id": restaurant_id,
        "customer_uid": world.customer_uid,
        "pickup": {"lat": 52.5, "lon": 13.4},
        "dropoff": {"lat": 52.51, "lon": 13.41},
        "promised_at": (datetime.now(UTC) + timedelta(minutes=30)).isoformat(),
    }


def _everyone(status: int, **overrides: int) -> dict[str, int]:
    result = dict.fromkeys(ROLES, status)
    result["anonymous"] = 401
    result.update(overrides)
    return result


def _admin_only(status: int) -> dict[str, int]:
    return _everyone(403, admin=status)


def build_calls(world: World) -> dict[str, Call]:
    admin = world.admin
    order = world.new_order(assign=world.courier_id)
    oid = order["id"]
    rid, cid = world.restaurant_id, world.courier_id
    alert = world.as_role("courier").post("/alerts", json={"message": "flat tyre"}).json()
    victims = {
        kind: admin.post(f"/{kind}", json={"id": _fresh(kind[0]), **extra}).json()["id"]
        for kind, extra in (
            ("restaurants", {"name": "X", "lat": 1.0, "lon": 2.0}),
            ("couriers", {"name": "X"}),
            ("vehicles", {"label": "X"}),
        )
    }
    not_yours = 404
    return {
        "healthz": Call("GET", "/healthz", None, dict.fromkeys(ROLES, 200)),
        "readyz": Call("GET", "/readyz", None, dict.fromkeys(ROLES, 200)),
        "metrics": Call("GET", "/metrics", None, dict.fromkeys(ROLES, 200)),
        "create restaurant": Call(
            "POST",
            "/restaurants",
            lambda: {"id": _fresh("r"), "name": "New", "lat": 1.0, "lon": 2.0},
            _admin_only(201),
        ),
        "list restaurants": Call("GET", "/restaurants", None, _admin_only(200)),
        "read restaurant": Call(
            "GET",
            f"/restaurants/{rid}",
            None,
            _admin_only(200) | {"restaurant": 200, "other_restaurant": not_yours},
        ),
        "update restaurant": Call(
            "PATCH", f"/restaurants/{rid}", lambda: {"name": "Pizza 2"}, _admin_only(200)
        ),
        "delete restaurant": Call(
            "DELETE", f"/restaurants/{victims['restaurants']}", None, _admin_only(204)
        ),
        "create courier": Call(
            "POST", "/couriers", lambda: {"id": _fresh("c"), "name": "N"}, _admin_only(201)
        ),
        "list couriers": Call("GET", "/couriers", None, _admin_only(200)),
        "read courier": Call(
            "GET",
            f"/couriers/{cid}",
            None,
            _admin_only(200) | {"courier": 200, "other_courier": not_yours},
        ),
        "update courier": Call(
            "PATCH", f"/couriers/{cid}", lambda: {"phone": "+49 30 1"}, _admin_only(200)
        ),
        "delete courier": Call(
            "DELETE", f"/couriers/{victims['couriers']}", None, _admin_only(204)
        ),
        "create vehicle": Call(
            "POST",
            "/vehicles",
            lambda: {"id": _fresh("v"), "label": "Van", "courier_id": cid},
            _admin_only(201),
        ),
        "list vehicles": Call("GET", "/vehicles", None, _admin_only(200)),
        "read vehicle": Call("GET", f"/vehicles/{victims['vehicles']}", None, _admin_only(200)),
        "update vehicle": Call(
            "PATCH", f"/vehicles/{victims['vehicles']}", lambda: {"label": "Bike"}, _admin_only(200)
        ),
        "delete vehicle": Call(
            "DELETE", f"/vehicles/{victims['vehicles']}", None, _admin_only(204)
        ),
        "create order": Call(
            "POST",
            "/orders",
            _order_body(world, rid),
            _admin_only(201) | {"restaurant": 201, "other_restaurant": 403},
        ),
        "list orders": Call("GET", "/orders", None, _everyone(200)),
        "read order": Call(
            "GET",
            f"/orders/{oid}",
            None,
            _everyone(200) | {"other_customer": 404, "other_restaurant": 404, "other_courier": 404},
        ),
        "order events": Call(
            "GET",
            f"/orders/{oid}/events",
            None,
            _everyone(200) | {"other_customer": 404, "other_restaurant": 404, "other_courier": 404},
        ),
        "assign": Call(
            "POST", f"/orders/{oid}/assignment", lambda: {"courier_id": cid}, _admin_only(200)
        ),
        "status": Call(
            "POST",
            f"/orders/{oid}/status",
            lambda: {"status": "picked_up"},
            _everyone(403)
            | {
                "anonymous": 401,
                "other_customer": 404,
                "other_restaurant": 404,
                "other_courier": 404,
                "courier": 200,
                "admin": 200,
            },
        ),
        "status batch": Call(
            "POST",
            "/orders/status-batch",
            lambda: {"items": [{"order_id": oid, "status": "picked_up"}]},
            _everyone(200),
        ),
        "last positions": Call("GET", "/positions/latest", None, _admin_only(200)),
        "track": Call(
            "GET",
            f"/couriers/{cid}/track",
            None,
            _admin_only(200) | {"courier": 200, "other_courier": not_yours},
        ),
        "track geojson": Call(
            "GET",
            f"/couriers/{cid}/track?format=geojson",
            None,
            _admin_only(200) | {"courier": 200, "other_courier": not_yours},
        ),
        "gpx": Call(
            "GET",
            f"/couriers/{cid}/track.gpx",
            None,
            _admin_only(200) | {"courier": 200, "other_courier": not_yours},
        ),
        "raise alert": Call(
            "POST",
            "/alerts",
            lambda: {"lat": 52.5, "lon": 13.4, "message": "help"},
            _everyone(403, courier=201, other_courier=201),
        ),
        "list alerts": Call("GET", "/alerts", None, _admin_only(200)),
        "acknowledge alert": Call(
            "POST", f"/alerts/{alert['id']}/acknowledge", None, _admin_only(200)
        ),
        "analytics": Call("GET", "/analytics", None, _admin_only(200)),
    }


CALL_NAMES = [
    "healthz", "readyz", "metrics",
    "create restaurant", "list restaurants", "read restaurant", "update restaurant",
    "delete restaurant", "create courier", "list couriers", "read courier", "update courier",
    "delete courier", "create vehicle", "list vehicles", "read vehicle", "update vehicle",
    "delete vehicle", "create order", "list orders", "read order", "order events", "assign",
    "status", "status batch", "last positions", "track", "track geojson", "gpx",
    "raise alert", "list alerts", "acknowledge alert", "analytics",
]  # fmt: skip


def clients(world: World) -> dict[str, httpx.Client]:
    api = world.api
    return {
        "anonymous": api.client(),
        "customer": world.as_role("customer"),
        "other_customer": api.client(api.token("customer")),
        "restaurant": world.as_role("restaurant"),
        "other_restaurant": api.client(api.token("restaurant", restaurant_id="r-elsewhere")),
        "courier": world.as_role("courier"),
        "other_courier": api.client(api.token("courier", courier_id=world.other_courier_id)),
        "admin": world.admin,
    }


@pytest.mark.parametrize("name", CALL_NAMES)
def test_route_with_every_role(world: World, name: str) -> None:
    call = build_calls(world)[name]
    assert set(call.expect) == set(ROLES)
    seen = {}
    by_role = clients(world)
    # The allowed roles go last, so a forbidden attempt never meets an already-changed state.
    for role in sorted(ROLES, key=lambda r: call.expect[r] < 400):
        body = call.body() if call.body else None
        response = by_role[role].request(call.method, call.path, json=body)
        seen[role] = response.status_code
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["code"], response.text
            assert error["message"], response.text
    assert seen == call.expect


def test_every_route_is_covered(world: World) -> None:
    """The table above names every route of the OpenAPI schema (except the devices routes,
    which have their own test) so a new route cannot slip in untested."""
    schema = world.admin.get("/openapi.json").json()
    routes = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if not path.startswith("/devices")
    }
    covered = set()
    for call in build_calls(world).values():
        path = call.path.split("?")[0]
        for method, template in routes:
            if method == call.method and _matches(template, path):
                covered.add((method, template))
    assert routes - covered == set()


def _matches(template: str, path: str) -> bool:
    left, right = template.strip("/").split("/"), path.strip("/").split("/")
    if len(left) != len(right):
        return False
    for a, b in zip(left, right, strict=True):
        if a.startswith("{") and a.endswith("}"):
            continue
        if "{" in a:
            prefix, _, rest = a.partition("{")
            suffix = rest.partition("}")[2]
            if not (b.startswith(prefix) and b.endswith(suffix)):
                return False
        elif a != b:
            return False
    return True


def test_customer_lists_only_their_own_orders(world: World) -> None:
    mine = world.new_order()
    theirs = world.new_order(customer="someone-else")
    ids = {o["id"] for o in world.as_role("customer").get("/orders").json()["items"]}
    assert mine["id"] in ids
    assert theirs["id"] not in ids
    admin_ids = {o["id"] for o in world.admin.get("/orders?limit=1000").json()["items"]}
    assert {mine["id"], theirs["id"]} <= admin_ids


def test_courier_sees_only_assigned_orders(world: World) -> None:
    mine = world.new_order(assign=world.courier_id)
    theirs = world.new_order(assign=world.other_courier_id)
    courier = world.as_role("courier")
    ids = {o["id"] for o in courier.get("/orders").json()["items"]}
    assert mine["id"] in ids
    assert theirs["id"] not in ids
    assert courier.get(f"/orders/{theirs['id']}").status_code == 404
