"""Who may subscribe to which channel, and what each socket may see: pure functions over the
principal, the channel and the order cache (docs/websocket.md, "Channels").

- admin: everything; `fleet` is the firehose; any existing order's `order:` channel.
- courier: `courier:<own id>` (their assignments, the status of their active orders, their
  positions and presence); `order:<id>` of an order they carry.
- customer: `order:<id>` of their own orders.
- restaurant: `restaurant:<own id>`, and `order:<id>` of its orders.

On `order:` and `restaurant:` channels a courier's positions are visible only while the
order is active: assigned, picked up or out for delivery, with a courier.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from auth import Principal
from bridge.orders import Order
from bridge.subscriptions import Key
from bridge.topics import FAMILIES
from protocol.client_frames import BAD_CHANNEL_MESSAGE, channel_parts
from protocol.client_frames import ChannelKind as ChannelKind

FLEET_KEYS: frozenset[Key] = frozenset((family, None) for family in FAMILIES)


class BadChannel(ValueError):
    """Not a channel name of the protocol."""


class Forbidden(Exception):
    """The principal may not see this channel (or it does not exist: never say which)."""


class OrderView(Protocol):
    """What the policy reads of the order cache (bridge.orders.OrderDirectory)."""

    def get(self, order_id: str) -> Order | None: ...

    def courier_active(self, courier_id: str) -> list[Order]: ...

    def restaurant_open(self, restaurant_id: str) -> list[Order]: ...


def parse_channel(channel: object) -> tuple[ChannelKind, str | None]:
    parts = channel_parts(channel)
    if parts is None:
        raise BadChannel(BAD_CHANNEL_MESSAGE)
    return parts


def owns(principal: Principal | None, order: Order) -> bool:
    """Whether the order is the principal's: theirs to order, to cook or to carry."""
    if principal is None:
        return False
    match principal.role:
        case "admin":
            return True
        case "customer":
            return order.customer_uid == principal.uid
        case "restaurant":
            return order.restaurant_id == principal.restaurant_id
        case "courier":
            return order.courier_id is not None and order.courier_id == principal.courier_id


def may_subscribe(
    principal: Principal, kind: ChannelKind, entity_id: str | None, order: Order | None
) -> bool:
    """`order` is the order of an `order:` channel (None if unknown); unused otherwise.
    A refusal never says whether the channel exists."""
    if kind == "order":
        return order is not None and owns(principal, order)
    if principal.role == "admin":
        return True
    if kind == "courier":
        return principal.role == "courier" and principal.courier_id == entity_id
    if kind == "restaurant":
        return principal.role == "restaurant" and principal.restaurant_id == entity_id
    return False


def channel_keys(
    principal: Principal | None, kind: ChannelKind, entity_id: str | None, orders: OrderView
) -> set[Key]:
    """The MQTT subscription keys one subscribed channel needs for this principal."""
    if kind == "fleet":
        return set(FLEET_KEYS)
    assert entity_id is not None
    if kind == "courier":
        keys: set[Key] = {
            ("location", entity_id),
            ("presence", entity_id),
            ("assignments", entity_id),
        }
        keys.update(("status", active.id) for active in orders.courier_active(entity_id))
        return keys
    if kind == "order":
        keys = {("status", entity_id)}
        order = orders.get(entity_id)
        if order is not None and order.active and owns(principal, order):
            keys.add(("location", order.courier_id))
        return keys
    keys = {("status", None)}
    keys.update(
        ("location", open_order.courier_id)
        for open_order in orders.restaurant_open(entity_id)
        if open_order.active
    )
    return keys


def wanted_keys(
    principal: Principal | None, channels: Iterable[str], orders: OrderView
) -> set[Key]:
    """The keys of all the socket's channels: a courier's positions are among them only
    while some channel may show them."""
    keys: set[Key] = set()
    for channel in channels:
        kind, entity_id = parse_channel(channel)
        keys |= channel_keys(principal, kind, entity_id, orders)
    return keys


def sees_status_on_courier_channel(principal: Principal | None, courier_id: str) -> bool:
    """A `courier:` channel shows an order's status to its courier and to admins only."""
    return principal is not None and (
        principal.role == "admin" or principal.courier_id == courier_id
    )


def snapshot_orders(kind: ChannelKind, entity_id: str | None, orders: OrderView) -> list[Order]:
    """The orders a channel's snapshot shows: the order, the restaurant's unfinished ones,
    the courier's active ones (the fleet's come from the database)."""
    if entity_id is None:
        return []
    if kind == "order":
        order = orders.get(entity_id)
        return [order] if order is not None else []
    if kind == "restaurant":
        return orders.restaurant_open(entity_id)
    if kind == "courier":
        return orders.courier_active(entity_id)
    return []
