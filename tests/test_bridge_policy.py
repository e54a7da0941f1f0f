"""bridge.policy in-process, table-driven: every role x channel x order state, including a
reassignment and the states after delivery (the bridge's access rules, docs/websocket.md)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from psycopg_pool import AsyncConnectionPool

from auth import Principal
from bridge.orders import Order, OrderDirectory
from bridge.policy import (
    FLEET_KEYS,
    BadChannel,
    may_subscribe,
    owns,
    parse_channel,
    sees_status_on_courier_channel,
    wanted_keys,
)
from bridge.subscriptions import Key
from protocol.statuses import Status

PRINCIPALS = {
    "admin": Principal(uid="ops", role="admin"),
    "courier c1": Principal(uid="u-c1", role="courier", courier_id="c1"),
    "courier c2": Principal(uid="u-c2", role="courier", courier_id="c2"),
    "customer alice": Principal(uid="alice", role="customer"),
    "customer eve": Principal(uid="eve", role="customer"),
    "restaurant r1": Principal(uid="u-r1", role="restaurant", restaurant_id="r1"),
    "restaurant r2": Principal(uid="u-r2", role="restaurant", restaurant_id="r2"),
}


@dataclass(frozen=True)
class OrderState:
    status: Status
    courier_id: str | None


STATES = {
    "created": OrderState(Status.PENDING, None),
    "assigned to c1": OrderState(Status.ASSIGNED, "c1"),
    "picked up by c1": OrderState(Status.PICKED_UP, "c1"),
    "out for delivery with c1": OrderState(Status.OUT_FOR_DELIVERY, "c1"),
    "reassigned to c2": OrderState(Status.ASSIGNED, "c2"),
    "delivered by c1": OrderState(Status.DELIVERED, "c1"),
    "cancelled while with c1": OrderState(Status.CANCELLED, "c1"),
}
ACTIVE = {"assigned to c1", "picked up by c1", "out for delivery with c1", "reassigned to c2"}


def directory(state: OrderState | None) -> OrderDirectory:
    """The bridge's real order cache, holding order o1 (of alice, from r1) in `state`."""
    orders = OrderDirectory(AsyncConnectionPool("dbname=unused", open=False))
    if state is not None:
        orders.remember(
            Order(
                id="o1",
                restaurant_id="r1",
                customer_uid="alice",
                courier_id=state.courier_id,
                status=state.status,
                eta=None,
                ts=0.0,
                version=1,
            )
        )
    return orders


def expected_order_access(who: str, state: str) -> bool:
    carrier = STATES[state].courier_id
    return who in ("admin", "customer alice", "restaurant r1") or who == f"courier {carrier}"


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("who", PRINCIPALS)
def test_order_channel(who: str, state: str) -> None:
    principal, orders = PRINCIPALS[who], directory(STATES[state])
    order = orders.get("o1")
    assert order is not None
    allowed = expected_order_access(who, state)
    assert may_subscribe(principal, "order", "o1", order) is allowed
    assert owns(principal, order) is allowed
    keys = wanted_keys(principal, ["order:o1"], orders)
    # Status always; the carrier's positions only while the order is active.
    carrier = STATES[state].courier_id
    expected: set[Key] = {("status", "o1")}
    if allowed and state in ACTIVE:
        expected.add(("location", carrier))
    assert keys == expected


@pytest.mark.parametrize("who", PRINCIPALS)
def test_an_unknown_order_is_refused_to_everyone(who: str) -> None:
    assert may_subscribe(PRINCIPALS[who], "order", "o1", None) is False


@pytest.mark.parametrize(
    ("channel", "allowed"),
    [
        ("fleet", {"admin"}),
        ("courier:c1", {"admin", "courier c1"}),
        ("courier:c2", {"admin", "courier c2"}),
        ("restaurant:r1", {"admin", "restaurant r1"}),
        ("restaurant:r2", {"admin", "restaurant r2"}),
    ],
)
@pytest.mark.parametrize("who", PRINCIPALS)
def test_entity_channels(who: str, channel: str, allowed: set[str]) -> None:
    kind, entity_id = parse_channel(channel)
    assert may_subscribe(PRINCIPALS[who], kind, entity_id, None) is (who in allowed)


@pytest.mark.parametrize("state", STATES)
def test_restaurant_channel_shows_positions_only_of_active_orders(state: str) -> None:
    orders = directory(STATES[state])
    keys = wanted_keys(PRINCIPALS["restaurant r1"], ["restaurant:r1"], orders)
    carrier = STATES[state].courier_id
    expected: set[Key] = {("status", None)}
    if state in ACTIVE:
        expected.add(("location", carrier))
    assert keys == expected
    # Another restaurant's channel never carries r1's courier.
    other = wanted_keys(PRINCIPALS["restaurant r2"], ["restaurant:r2"], orders)
    assert other == {("status", None)}


@pytest.mark.parametrize("state", STATES)
def test_courier_channel_follows_the_courier_and_their_active_orders(state: str) -> None:
    orders = directory(STATES[state])
    keys = wanted_keys(PRINCIPALS["courier c1"], ["courier:c1"], orders)
    expected: set[Key] = {("location", "c1"), ("presence", "c1"), ("assignments", "c1")}
    if state in ACTIVE and STATES[state].courier_id == "c1":
        expected.add(("status", "o1"))
    assert keys == expected


def test_fleet_is_every_family_and_keys_add_up_over_channels() -> None:
    orders = directory(STATES["picked up by c1"])
    admin = PRINCIPALS["admin"]
    assert wanted_keys(admin, ["fleet"], orders) == set(FLEET_KEYS)
    both = wanted_keys(admin, ["order:o1", "courier:c2"], orders)
    assert both == wanted_keys(admin, ["order:o1"], orders) | wanted_keys(
        admin, ["courier:c2"], orders
    )


@pytest.mark.parametrize("who", PRINCIPALS)
def test_status_on_a_courier_channel_goes_to_that_courier_and_admins(who: str) -> None:
    expected = who in ("admin", "courier c1")
    assert sees_status_on_courier_channel(PRINCIPALS[who], "c1") is expected
    assert sees_status_on_courier_channel(None, "c1") is False


@pytest.mark.parametrize(
    "channel",
    ["", "fleet:", "order", "order:", "vehicle:v1", "order:a b", "order:" + "x" * 65, 7, None],
)
def test_bad_channels_are_refused(channel: object) -> None:
    with pytest.raises(BadChannel):
        parse_channel(channel)
