"""Each role receives exactly what it may over the bridge, and nothing else.

Real Mosquitto, real PostgreSQL, a real `python -m bridge` and a real WebSocket client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.bridge_support import (
    BridgeProcess,
    Frame,
    apublish,
    connected,
    fix,
    next_event_id,
    publish_alert,
    publish_assignment,
    running_bridge,
    seed_order,
    set_order_status,
    stream_until_seen,
)
from tests.services import Services

pytestmark = pytest.mark.anyio

Db = psycopg.Connection[Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def bridge(services: Services) -> Iterator[BridgeProcess]:
    with running_bridge(services, bridge_unsubscribe_linger_s="0.2") as running:
        yield running


def locations_of(frames: list[Frame], courier_id: str) -> list[Frame]:
    found = [f for f in frames if f["type"] == "location" and f["id"] == courier_id]
    for frame in frames:
        if frame["type"] == "locations":
            found.extend(i for i in frame["items"] if i["id"] == courier_id)
    return found


async def test_customer_sees_positions_only_from_assignment_to_delivery(
    bridge: BridgeProcess, db: Db, unique: str
) -> None:
    services = bridge.services
    order, courier, restaurant, alice = f"o{unique}", f"c{unique}", f"r{unique}", f"alice{unique}"
    seed_order(db, order_id=order, restaurant_id=restaurant, customer_uid=alice)
    client = await connected(bridge, "customer", alice)
    _, snapshot = await client.subscribe(f"order:{order}")
    assert [o["status"] for o in snapshot["orders"]] == ["pending"]
    assert snapshot["locations"] == []

    # Before assignment: the courier's fixes never reach the customer.
    await apublish(services, f"fleet/couriers/{courier}/location", fix(1.0, 1.0))
    assert locations_of(await client.drain(0.7), courier) == []

    common: dict[str, Any] = {"order_id": order, "restaurant_id": restaurant, "customer_uid": alice}
    await set_order_status(db, services, status="assigned", courier_id=courier, **common)
    status = await client.expect_type("status")
    assert (status["order"], status["status"], status["courier_id"]) == (
        order,
        "assigned",
        courier,
    )
    await stream_until_seen(client, services, courier, lat=2.0)
    await apublish(services, f"fleet/couriers/{courier}/location", fix(2.5, 2.0, speed=4.2))
    # Fixes the stream above published before it saw one may still arrive first.
    location, stragglers = await client.expect(
        lambda f: f["type"] == "location" and f["lat"] == 2.5
    )
    assert {(f["id"], f["lat"]) for f in locations_of(stragglers, courier)} <= {(courier, 2.0)}
    assert (location["id"], location["lat"], location["lon"], location["speed"]) == (
        courier,
        2.5,
        2.0,
        4.2,
    )
    assert {"ts", "heading", "sent"} <= set(location)

    await set_order_status(db, services, status="delivered", courier_id=courier, **common)
    delivered, _ = await client.expect(lambda f: f["type"] == "status")
    assert delivered["status"] == "delivered"
    # After delivery: nothing of the courier any more.
    for n in range(3):
        await apublish(services, f"fleet/couriers/{courier}/location", fix(3.0 + n, 3.0))
    after = await client.drain(1.0)
    assert locations_of(after, courier) == [], after
    await client.close()


async def test_customer_cannot_subscribe_to_another_customers_order(
    bridge: BridgeProcess, db: Db, unique: str
) -> None:
    order = f"o{unique}"
    seed_order(db, order_id=order, restaurant_id=f"r{unique}", customer_uid=f"bob{unique}")
    mallory = await connected(bridge, "customer", f"mallory{unique}")
    refused_before = bridge.metric("bridge_client_errors_total", code="forbidden")
    for channel in (f"order:{order}", "order:does-not-exist"):
        await mallory.send({"type": "subscribe", "channel": channel})
        error = await mallory.expect_type("error")
        # The same answer whether the order exists or not: never confirm that it exists.
        assert (error["code"], error["channel"]) == ("forbidden", channel)
    assert bridge.metric("bridge_client_errors_total", code="forbidden") == refused_before + 2
    # Other roles' channels are refused too, and the third violation closes the socket.
    await mallory.send({"type": "subscribe", "channel": "fleet"})
    assert (await mallory.expect_type("error"))["code"] == "forbidden"
    assert await mallory.closed_with() == 4403


async def test_restaurant_sees_its_orders_and_not_another_restaurant(
    bridge: BridgeProcess, db: Db, unique: str
) -> None:
    services = bridge.services
    mine, theirs = f"r{unique}", f"q{unique}"
    order, other_order = f"o{unique}", f"p{unique}"
    courier, other_courier = f"c{unique}", f"d{unique}"
    seed_order(db, order_id=order, restaurant_id=mine, customer_uid="x")
    seed_order(db, order_id=other_order, restaurant_id=theirs, customer_uid="y")
    kitchen = await connected(bridge, "restaurant", f"u{unique}", restaurant_id=mine)

    await kitchen.send({"type": "subscribe", "channel": f"restaurant:{theirs}"})
    assert (await kitchen.expect_type("error"))["code"] == "forbidden"
    await kitchen.send({"type": "subscribe", "channel": f"order:{other_order}"})
    assert (await kitchen.expect_type("error"))["code"] == "forbidden"

    _, snapshot = await kitchen.subscribe(f"restaurant:{mine}")
    assert [o["order"] for o in snapshot["orders"]] == [order]

    await set_order_status(
        db,
        services,
        order_id=other_order,
        status="assigned",
        courier_id=other_courier,
        restaurant_id=theirs,
        customer_uid="y",
    )
    await set_order_status(
        db,
        services,
        order_id=order,
        status="assigned",
        courier_id=courier,
        restaurant_id=mine,
        customer_uid="x",
        eta=datetime(2030, 1, 1, 12, tzinfo=UTC),
    )
    status, skipped = await kitchen.expect(lambda f: f["type"] == "status")
    assert (status["order"], status["eta"]) == (order, "2030-01-01T12:00:00+00:00")
    assert skipped == []
    await apublish(services, f"fleet/couriers/{other_courier}/location", fix())
    location, others = await stream_until_seen(kitchen, services, courier, lat=5.0)
    assert location["id"] == courier
    assert all(f.get("id") != other_courier for f in others)
    assert [f for f in await kitchen.drain(0.5) if f.get("id") == other_courier] == []
    await kitchen.close()


async def test_courier_sees_own_assignments_orders_and_echo_only(
    bridge: BridgeProcess, db: Db, unique: str
) -> None:
    services = bridge.services
    me, colleague, order = f"c{unique}", f"d{unique}", f"o{unique}"
    seed_order(db, order_id=order, restaurant_id=f"r{unique}", customer_uid="z")
    rider = await connected(bridge, "courier", f"u{unique}", courier_id=me)
    await rider.send({"type": "subscribe", "channel": f"courier:{colleague}"})
    assert (await rider.expect_type("error"))["code"] == "forbidden"
    await rider.subscribe(f"courier:{me}")

    version = await set_order_status(
        db,
        services,
        order_id=order,
        status="assigned",
        courier_id=me,
        restaurant_id=f"r{unique}",
        customer_uid="z",
    )
    await publish_assignment(services, courier_id=me, order_id=order, version=version)
    assignment = await rider.expect_type("assignment")
    assert (assignment["order"], assignment["action"]) == (order, "assigned")
    # The order is the courier's now: its status changes reach them.
    await set_order_status(
        db,
        services,
        order_id=order,
        status="picked_up",
        courier_id=me,
        restaurant_id=f"r{unique}",
        customer_uid="z",
    )
    status, _ = await rider.expect(lambda f: f["type"] == "status" and f["status"] == "picked_up")
    assert status["order"] == order
    await apublish(services, f"fleet/couriers/{colleague}/location", fix())
    await apublish(services, f"fleet/couriers/{me}/location", fix(7.0, 7.0))
    echo, skipped = await rider.expect(lambda f: f["type"] == "location")
    assert echo["id"] == me
    assert all(f.get("id") != colleague for f in skipped)
    # A colleague's events never reach this courier.
    await publish_assignment(services, courier_id=colleague, order_id=order, version=version)
    await publish_alert(services, alert_id=next_event_id(), courier_id=colleague, message="x")
    assert [f for f in await rider.drain(0.7) if f["type"] in ("assignment", "emergency")] == []
    await rider.close()


async def test_admin_fleet_sees_everything(bridge: BridgeProcess, db: Db, unique: str) -> None:
    services = bridge.services
    courier, vehicle, order = f"c{unique}", f"v{unique}", f"o{unique}"
    seed_order(db, order_id=order, restaurant_id=f"r{unique}", customer_uid="w")
    admin = await connected(bridge, "admin", f"ops{unique}")
    _, snapshot = await admin.subscribe("fleet")
    assert order in {o["order"] for o in snapshot["orders"]}
    await apublish(services, f"fleet/couriers/{courier}/location", fix(1.5, 1.5))
    await apublish(services, f"fleet/vehicles/{vehicle}/location", fix(2.5, 2.5))
    await apublish(
        services,
        "owntracks/{}/phone".format(courier + "o"),
        {"_type": "location", "lat": 3.5, "lon": 3.5, "tst": 1.7e9 + 1, "vel": 36},
    )
    await apublish(services, f"fleet/couriers/{courier}/presence", {"state": "busy", "ts": 1.7e9})
    version = await set_order_status(
        db,
        services,
        order_id=order,
        status="assigned",
        courier_id=courier,
        restaurant_id=f"r{unique}",
        customer_uid="w",
    )
    await publish_assignment(services, courier_id=courier, order_id=order, version=version)
    alert_id = next_event_id()
    await publish_alert(services, alert_id=alert_id, courier_id=courier, message="flat tyre")
    frames = await admin.drain(1.5)
    kinds = {f["type"] for f in frames}
    assert {"locations", "presence", "status", "assignment", "emergency"} <= kinds, frames
    items = [i for f in frames if f["type"] == "locations" for i in f["items"]]
    assert {(i["kind"], i["id"]) for i in items} >= {
        ("courier", courier),
        ("vehicle", vehicle),
        ("courier", courier + "o"),
    }
    owntracks = next(i for i in items if i["id"] == courier + "o")
    assert owntracks["speed"] == pytest.approx(10.0)
    emergency = next(f for f in frames if f["type"] == "emergency")
    assert (emergency["courier_id"], emergency["message"]) == (courier, "flat tyre")
    assert (emergency["alert_id"], emergency["state"]) == (alert_id, "raised")
    await admin.close()


async def test_reassignment_moves_the_customer_to_the_new_courier(
    bridge: BridgeProcess, db: Db, unique: str
) -> None:
    services = bridge.services
    order, first, second, carol = f"o{unique}", f"c{unique}", f"d{unique}", f"carol{unique}"
    restaurant = f"r{unique}"
    seed_order(
        db,
        order_id=order,
        restaurant_id=restaurant,
        customer_uid=carol,
        courier_id=first,
        status="assigned",
    )
    customer = await connected(bridge, "customer", carol)
    await customer.subscribe(f"order:{order}")
    await apublish(services, f"fleet/couriers/{first}/location", fix(1.0, 1.0))
    assert (await customer.expect_type("location"))["id"] == first

    await set_order_status(
        db,
        services,
        order_id=order,
        status="assigned",
        courier_id=second,
        previous_courier_id=first,
        restaurant_id=restaurant,
        customer_uid=carol,
    )
    status = await customer.expect_type("status")
    assert status["courier_id"] == second
    await apublish(services, f"fleet/couriers/{first}/location", fix(2.0, 2.0))
    location, others = await stream_until_seen(customer, services, second, lat=3.0)
    assert location["id"] == second
    await apublish(services, f"fleet/couriers/{first}/location", fix(4.0, 4.0))
    others += await customer.drain(0.5)
    assert locations_of(others, first) == [], others
    await customer.close()


async def test_snapshot_has_status_eta_and_last_position(
    bridge: BridgeProcess, db: Db, unique: str
) -> None:
    order, courier, dave = f"o{unique}", f"c{unique}", f"dave{unique}"
    seed_order(
        db,
        order_id=order,
        restaurant_id=f"r{unique}",
        customer_uid=dave,
        courier_id=courier,
        status="out_for_delivery",
    )
    # Computed after the courier's newest fix, so the session's API (which recomputes due
    # ETAs every 0.5 s) leaves it alone: it once replaced it between this line and the read.
    db.execute(
        "UPDATE orders SET eta = '2030-01-01T12:00:00Z', eta_computed_at = now() + interval '1 day'"
        " WHERE id = %s",
        (order,),
    )
    db.execute(
        "INSERT INTO last_positions (source_kind, source_id, fix_time, lat, lon, received_at) "
        "VALUES ('courier', %s, now(), 48.1, 11.5, now())",
        (courier,),
    )
    customer = await connected(bridge, "customer", dave)
    confirmation, snapshot = await customer.subscribe(f"order:{order}")
    assert confirmation["channel"] == f"order:{order}"
    (summary,) = snapshot["orders"]
    assert summary["status"] == "out_for_delivery"
    assert summary["eta"].startswith("2030-01-01T12:00:00")
    (position,) = snapshot["locations"]
    assert (position["id"], position["lat"], position["lon"]) == (courier, 48.1, 11.5)
    await customer.send({"type": "unsubscribe", "channel": f"order:{order}"})
    assert (await customer.expect_type("unsubscribed"))["channel"] == f"order:{order}"
    await customer.close()
