"""Who an order belongs to and who carries it: read from the database, cached, and kept
current from the order status and assignment events the bridge relays."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bridge.events import ACTIVE_STATUSES, AssignmentEvent, StatusEvent

_COLUMNS = "id, restaurant_id, customer_uid, courier_id, status, eta, updated_at"


@dataclass(slots=True)
class Order:
    id: str
    restaurant_id: str
    customer_uid: str
    courier_id: str | None
    status: str
    eta: str | None
    # Epoch seconds of the newest change applied, so an older event never wins.
    ts: float

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES and self.courier_id is not None

    def summary(self) -> dict[str, Any]:
        return {
            "order": self.id,
            "status": self.status,
            "courier_id": self.courier_id,
            "eta": self.eta,
            "ts": self.ts,
        }


def _order(row: dict[str, Any]) -> Order:
    eta: datetime | None = row["eta"]
    updated: datetime = row["updated_at"]
    return Order(
        id=row["id"],
        restaurant_id=row["restaurant_id"],
        customer_uid=row["customer_uid"],
        courier_id=row["courier_id"],
        status=row["status"],
        eta=None if eta is None else eta.isoformat(),
        ts=updated.timestamp(),
    )


class OrderDirectory:
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

    def _merge(self, order: Order) -> Order:
        known = self._orders.get(order.id)
        if known is not None and known.ts > order.ts:
            return known
        self._orders[order.id] = order
        return order

    async def _fetch(self, where: str, params: tuple[object, ...]) -> list[Order]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_COLUMNS} FROM orders WHERE {where}", params)
            return [self._merge(_order(row)) for row in await cur.fetchall()]

    async def load(self, order_id: str, *, refresh: bool = False) -> Order | None:
        if not refresh and (known := self._orders.get(order_id)) is not None:
            return known
        found = await self._fetch("id = %s", (order_id,))
        return found[0] if found else self._orders.get(order_id)

    async def load_restaurant(self, restaurant_id: str) -> list[Order]:
        """The restaurant's orders that are not finished yet."""
        return await self._fetch(
            "restaurant_id = %s AND status NOT IN ('delivered', 'cancelled')", (restaurant_id,)
        )

    async def load_courier(self, courier_id: str) -> list[Order]:
        """The orders a courier carries now."""
        return await self._fetch(
            "courier_id = %s AND status IN ('assigned', 'picked_up', 'out_for_delivery')",
            (courier_id,),
        )

    def restaurant_open(self, restaurant_id: str) -> list[Order]:
        return [
            o
            for o in self._orders.values()
            if o.restaurant_id == restaurant_id and o.status not in ("delivered", "cancelled")
        ]

    def courier_active(self, courier_id: str) -> list[Order]:
        return [o for o in self._orders.values() if o.courier_id == courier_id and o.active]

    def apply_status(self, event: StatusEvent) -> tuple[Order | None, Order | None]:
        """Apply a status event to a cached order: (before, after), or (None, None) if the
        order is not cached or the event is older than what is known."""
        known = self._orders.get(event.order_id)
        if known is None or event.ts < known.ts:
            return None, None
        before = Order(**{name: getattr(known, name) for name in Order.__slots__})
        known.status = event.status
        known.ts = event.ts
        if event.eta is not None or event.status not in ACTIVE_STATUSES:
            known.eta = event.eta
        if event.courier_id is not None:
            known.courier_id = event.courier_id
        return before, known

    def apply_assignment(self, event: AssignmentEvent) -> tuple[Order | None, Order | None]:
        known = self._orders.get(event.order_id)
        if known is None or event.ts < known.ts:
            return None, None
        before = Order(**{name: getattr(known, name) for name in Order.__slots__})
        if event.action == "assigned":
            known.courier_id = event.courier_id
            if known.status == "pending":
                known.status = "assigned"
        elif known.courier_id == event.courier_id:
            known.courier_id = None
            if known.status == "assigned":
                known.status = "pending"
        known.ts = event.ts
        return before, known
