"""Who an order belongs to and who carries it: read from the database, cached, and kept
current from the order status and assignment events the bridge relays."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bridge.events import StatusEvent
from protocol.statuses import ACTIVE as ACTIVE_STATUSES
from protocol.statuses import TERMINAL as FINISHED_STATUSES

_COLUMNS = "id, restaurant_id, customer_uid, courier_id, status, eta, updated_at, version"


@dataclass(slots=True)
class Order:
    id: str
    restaurant_id: str
    customer_uid: str
    courier_id: str | None
    status: str
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

    def summary(self) -> dict[str, Any]:
        return {
            "order": self.id,
            "status": self.status,
            "courier_id": self.courier_id,
            "eta": self.eta,
            "ts": self.ts,
            "version": self.version,
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
        version=row["version"],
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

    async def _fetch(self, where: str, params: tuple[object, ...]) -> list[Order]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_COLUMNS} FROM orders WHERE {where}", params)  # noqa: S608
            return [self.remember(_order(row)) for row in await cur.fetchall()]

    async def load(self, order_id: str, *, refresh: bool = False) -> Order | None:
        if not refresh and (known := self._orders.get(order_id)) is not None:
            return known
        found = await self._fetch("id = %s", (order_id,))
        return found[0] if found else self._orders.get(order_id)

    async def reload(self, order_id: str) -> Change:
        """Read the order again from the database: (before, after)."""
        known = self._orders.get(order_id)
        before = None if known is None else known.copy()
        return before, await self.load(order_id, refresh=True)

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
            o for o in self._orders.values() if o.restaurant_id == restaurant_id and not o.finished
        ]

    def courier_active(self, courier_id: str) -> list[Order]:
        return [o for o in self._orders.values() if o.courier_id == courier_id and o.active]

    def apply_status(self, event: StatusEvent) -> Change | None:
        """Apply an announced state to the cached order: (before, after), or None if the
        order is not cached, is finished already, or the announcement is not newer by
        version (an announcement without a version is never newer: reload the order).
        Delivered and cancelled apply whatever their version: no order leaves them."""
        known = self._orders.get(event.order_id)
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
