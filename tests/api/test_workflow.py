"""The status workflow, table-driven: every (from, to) pair, the roles' limits, repeats,
batch updates, and the same rules applied to a courier's MQTT report."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from tests.api.conftest import World
from tests.services import Services
from workflow import Actor, Status, allowed_next, apply_status

STATUSES = ["pending", "assigned", "picked_up", "out_for_delivery", "delivered", "cancelled"]
# Written out by hand rather than read from workflow.TRANSITIONS, so the test checks it.
ALLOWED_NEXT = {
    "pending": ["cancelled"],
    "assigned": ["picked_up", "cancelled"],
    "picked_up": ["out_for_delivery", "cancelled"],
    "out_for_delivery": ["delivered", "cancelled"],
    "delivered": [],
    "cancelled": [],
}
PATH = ["picked_up", "out_for_delivery", "delivered"]


def order_in(world: World, status: str) -> dict[str, Any]:
    if status == "pending":
        return world.new_order()
    order = world.new_order(assign=world.courier_id)
    if status == "cancelled":
        steps = ["cancelled"]
    elif status == "assigned":
        steps = []
    else:
        steps = PATH[: PATH.index(status) + 1]
    for step in steps:
        response = world.admin.post(f"/orders/{order['id']}/status", json={"status": step})
        assert response.status_code == 200, response.text
        order = response.json()
    assert order["status"] == status
    return order


@pytest.mark.parametrize("current", STATUSES)
def test_every_transition_for_an_admin(world: World, current: str) -> None:
    for target in STATUSES:
        order = order_in(world, current)
        response = world.admin.post(
            f"/orders/{order['id']}/status", json={"status": target, "note": "t"}
        )
        repeat = target == current and current != "pending"
        if target in ALLOWED_NEXT[current] or repeat:
            assert response.status_code == 200, (current, target, response.text)
            assert response.json()["status"] == target
        else:
            assert response.status_code == 409, (current, target, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_transition"
            assert error.get("allowed", []) == ALLOWED_NEXT[current]
            assert world.admin.get(f"/orders/{order['id']}").json()["status"] == current


def test_rules_table_matches_the_workflow_package() -> None:
    assert {s: [str(x) for x in allowed_next(s)] for s in STATUSES} == ALLOWED_NEXT


ROLE_CASES = [
    # (role, from, to, expected HTTP status)
    ("courier", "assigned", "picked_up", 200),
    ("courier", "picked_up", "out_for_delivery", 200),
    ("courier", "out_for_delivery", "delivered", 200),
    ("courier", "assigned", "cancelled", 403),
    ("courier", "assigned", "delivered", 409),
    ("restaurant", "pending", "cancelled", 200),
    ("restaurant", "assigned", "cancelled", 200),
    ("restaurant", "picked_up", "cancelled", 403),
    ("restaurant", "assigned", "picked_up", 403),
    ("customer", "assigned", "cancelled", 403),
    ("customer", "assigned", "picked_up", 403),
]


@pytest.mark.parametrize(("role", "current", "target", "expected"), ROLE_CASES)
def test_role_limits(world: World, role: str, current: str, target: str, expected: int) -> None:
    order = order_in(world, current)
    response = world.as_role(role).post(f"/orders/{order['id']}/status", json={"status": target})
    assert response.status_code == expected, response.text
    final = world.admin.get(f"/orders/{order['id']}").json()["status"]
    assert final == (target if expected == 200 else current)


def test_other_peoples_orders_are_not_found(world: World) -> None:
    order = world.new_order(assign=world.other_courier_id)
    for role in ("courier", "restaurant", "customer"):
        client = world.as_role(role)
        if role == "restaurant":
            client = world.api.client(world.api.token("restaurant", restaurant_id="r-someone-else"))
        if role == "customer":
            client = world.api.client(world.api.token("customer", uid="not-the-customer"))
        response = client.post(f"/orders/{order['id']}/status", json={"status": "picked_up"})
        assert response.status_code == 404, (role, response.text)
        missing = client.post("/orders/no-such-order/status", json={"status": "picked_up"})
        assert missing.status_code == 404
        # The same answer whether the order exists or not: nothing to tell them apart.
        assert response.json()["error"]["code"] == missing.json()["error"]["code"]


def test_each_change_is_an_event_and_a_repeat_is_harmless(world: World) -> None:
    order = world.new_order(assign=world.courier_id)
    courier = world.as_role("courier")
    for _ in range(3):
        response = courier.post(
            f"/orders/{order['id']}/status", json={"status": "picked_up", "note": "got it"}
        )
        assert response.status_code == 200
    events = world.admin.get(f"/orders/{order['id']}/events").json()["items"]
    status_events = [e for e in events if e["kind"] == "status"]
    assert len(status_events) == 1
    event = status_events[0]
    assert event["payload"]["from"] == "assigned"
    assert event["payload"]["to"] == "picked_up"
    assert event["payload"]["note"] == "got it"
    assert event["payload"]["actor"]["role"] == "courier"
    assert event["time"]
    assert [e["kind"] for e in events] == ["assignment", "status"]


def test_batch_results_per_item(world: World) -> None:
    good = world.new_order(assign=world.courier_id)
    bad = world.new_order(assign=world.courier_id)
    theirs = world.new_order(assign=world.other_courier_id)
    response = world.as_role("courier").post(
        "/orders/status-batch",
        json={
            "items": [
                {"order_id": good["id"], "status": "picked_up"},
                {"order_id": bad["id"], "status": "delivered"},
                {"order_id": "no-such-order", "status": "picked_up"},
                {"order_id": theirs["id"], "status": "picked_up"},
                {"order_id": bad["id"], "status": "cancelled"},
            ]
        },
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["order_id"], r["http_status"], r["outcome"]) for r in results] == [
        (good["id"], 200, "applied"),
        (bad["id"], 409, "rejected"),
        ("no-such-order", 404, "not_found"),
        (theirs["id"], 404, "not_found"),
        (bad["id"], 403, "forbidden"),
    ]
    assert results[1]["allowed"] == ["picked_up"]
    assert world.admin.get(f"/orders/{good['id']}").json()["status"] == "picked_up"
    assert world.admin.get(f"/orders/{bad['id']}").json()["status"] == "assigned"


def test_batch_validates_items(world: World) -> None:
    response = world.admin.post(
        "/orders/status-batch", json={"items": [{"order_id": "x", "status": "flying"}]}
    )
    assert response.status_code == 422
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert fields == ["body.items.0.status"]


async def _mqtt_report(dsn: str, *, courier_id: str, order_id: str, status: str) -> str:
    """What ingest does with fleet/couriers/{id}/deliveries/{order}/status."""
    actor = Actor(role="courier", uid=f"device:{courier_id}", courier_id=courier_id)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            change = await apply_status(
                conn,
                order_id=order_id,
                target=status,
                actor=actor,
                source="mqtt",
                dedup_key=f"status/{courier_id}/{order_id}/{status}",
                record_rejection=True,
            )
        return change.outcome


def test_mqtt_reports_follow_the_same_rules(world: World, services: Services) -> None:
    order = world.new_order(assign=world.courier_id)

    def report(status: str, courier: str = world.courier_id) -> str:
        return asyncio.run(
            _mqtt_report(services.dsn, courier_id=courier, order_id=order["id"], status=status)
        )

    assert report("delivered") == "rejected"
    assert report("picked_up") == "applied"
    assert report("picked_up") == "repeat"
    assert report("picked_up", world.other_courier_id) == "rejected"
    assert world.admin.get(f"/orders/{order['id']}").json()["status"] == Status.PICKED_UP
    kinds = [
        (e["kind"], e["source_kind"], e["payload"].get("to"))
        for e in world.admin.get(f"/orders/{order['id']}/events").json()["items"]
    ]
    assert kinds == [
        ("assignment", "user", None),
        ("status_rejected", "courier", "delivered"),
        ("status", "courier", "picked_up"),
        # Another courier's report about this order is refused and kept, never applied.
        ("status_rejected", "courier", "picked_up"),
    ]
