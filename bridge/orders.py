"""Who an order belongs to and who carries it: read from the database, cached, and kept
current from the order status and assignment events the bridge relays."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from protocol.frames import OrderSummary, StatusFrame
from protocol.statuses import ACTIVE as ACTIVE_STATUSES
from protocol.statuses import TERMINAL as FINISHED_STATUSES
from protocol.statuses import Status
from store import orders as store
from store.orders import OrderRow


@dataclass(slots=True)
class Order:
    id: str
    restaurant_id: str
    customer_uid: str
    courier_id: str | None
    status: Status
    eta: str | None
    # Epoch seconds of the newest change applied (shown to browsers; never used to order).
    ts: float
    # orders.version of the newest change applied: announcements apply in this order only.
    version: int

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES and self.courier_id is not None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def copy(self) -> Order:
        return Order(**{name: getattr(self, name) for name in Order.__slots__})

    def summary(self) -> OrderSummary:
        """The order as a snapshot shows it."""
        return OrderSummary(self.id, self.status, self.courier_id, self.eta, self.ts, self.version)


def order_from_row(row: OrderRow) -> Order:
    return Order(
        id=row.id,
        restaurant_id=row.restaurant_id,
        customer_uid=row.customer_uid,
        courier_id=row.courier_id,
        status=row.status,
        eta=None if row.eta is None else row.eta.isoformat(),
        ts=row.updated_at.timestamp(),
        version=row.version,
    )


Change = tuple[Order | None, Order | None]


class OrderDirectory:
    """The cache. Its one rule: a change is applied only if it is newer by the order's
    version (a database row at the same version is the same state), and a finished order
    (delivered, cancelled) stays finished whatever comes later."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool
        self._orders: dict[str, Order] = {}

    def get(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)

    def cached(self) -> Iterable[Order]:
        return self._orders.values()

    def evict(self, keep: set[str]) -> None:
        for order_id in [o for o in self._orders if o not in keep]:
            del self._orders[order_id]

    def remember(self, order: Order) -> Order:
        """Cache a read order unless the cache knows a newer version or it finished; returns
        the order the cache now holds."""
        known = self._orders.get(order.id)
        if known is not None and (
            order.version < known.version or (known.finished and not order.finished)
        ):
            return known
        self._orders[order.id] = order
        return order

    async def _fetch(
        self, query: Callable[[AsyncConnection[Any]], Awaitable[list[OrderRow]]]
    ) -> list[Order]:
        async with self._pool.connection() as conn:
            rows = await query(conn)
        return [self.remember(order_from_row(row)) for row in rows]

    async def load(self, order_id: str, *, refresh: bool = False) -> Order | None:
        if not refresh and (known := self._orders.get(order_id)) is not None:
            return known

        async def one(conn: AsyncConnection[Any]) -> list[OrderRow]:
            row = await store.load_order(conn, order_id)
            return [] if row is None else [row]

        found = await self._fetch(one)
        return found[0] if found else self._orders.get(order_id)

    async def reload(self, order_id: str) -> Change:
        """Read the order again from the database: (before, after)."""
        known = self._orders.get(order_id)
        before = None if known is None else known.copy()
        return before, await self.load(order_id, refresh=True)

    async def load_restaurant(self, restaurant_id: str) -> list[Order]:
        """The restaurant's orders that are not finished yet."""
        return await self._fetch(lambda conn: store.open_orders_of_restaurant(conn, restaurant_id))

    async def load_courier(self, courier_id: str) -> list[Order]:
        """The orders a courier carries now."""
        return await self._fetch(lambda conn: store.active_orders_of_courier(conn, courier_id))

    async def load_channel(self, kind: str, entity_id: str | None, *, refresh: bool) -> None:
        """Cache the orders a channel's relations depend on (nothing for `fleet`)."""
        if entity_id is None:
            return
        if kind == "order":
            await self.load(entity_id, refresh=refresh)
        elif kind == "restaurant":
            await self.load_restaurant(entity_id)
        elif kind == "courier":
            await self.load_courier(entity_id)

    def restaurant_open(self, restaurant_id: str) -> list[Order]:
        return [
            o for o in self._orders.values() if o.restaurant_id == restaurant_id and not o.finished
        ]

    def courier_active(self, courier_id: str) -> list[Order]:
        return [o for o in self._orders.values() if o.courier_id == courier_id and o.active]

    def apply_status(self, event: StatusFrame) -> Change | None:
        """Apply an announced state to the cached order: (before, after), or None if the
        order is not cached, is finished already, or the announcement is not newer by
        version (an announcement without a version is never newer: reload the order).
        Delivered and cancelled apply whatever their version: no order leaves them."""
        known = self._orders.get(event.order)
        if known is None or known.finished:
            return None
        newer = event.version is not None and event.version > known.version
        if not newer and event.status not in FINISHED_STATUSES:
            return None
        before = known.copy()
        known.status = event.status
        known.courier_id = event.courier_id
        known.eta = event.eta
        known.ts = event.ts
        known.version = max(known.version, event.version or 0)
        return before, known
