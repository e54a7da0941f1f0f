"""The orders queries: the API writes orders, their assignments and their history
(``order_events``); the workflow, the API and the bridge read orders through the functions
here.

Every change of an order bumps ``orders.version`` (the bridge applies announcements in
version order). Status sets are query parameters (protocol.statuses), never SQL literals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from protocol.statuses import ACTIVE_LIST, TERMINAL_LIST, Status


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One row of ``orders``; its fields name the columns (:data:`ORDER_COLUMNS`)."""

    id: str
    restaurant_id: str
    customer_uid: str
    pickup_lat: float
    pickup_lon: float
    dropoff_lat: float
    dropoff_lon: float
    promised_at: datetime
    status: Status
    courier_id: str | None
    eta: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    version: int

    @classmethod
    def from_record(cls, record: Sequence[Any]) -> OrderRow:
        """The row from the values of :data:`ORDER_COLUMNS`, in that order."""
        values = list(record)
        values[_STATUS_INDEX] = Status(values[_STATUS_INDEX])
        return cls(*values)

    def replace(self, **changes: Any) -> OrderRow:
        """A copy with some columns changed (what a change will store, before it is)."""
        return dataclasses.replace(self, **changes)


ORDER_COLUMNS = ", ".join(field.name for field in dataclasses.fields(OrderRow))
_STATUS_INDEX = [field.name for field in dataclasses.fields(OrderRow)].index("status")


@dataclass(frozen=True, slots=True)
class Visibility:
    """Which orders someone may list: every order (`column` None), or those whose `column`
    equals `value` (their deliveries, their restaurant's, their own)."""

    column: Literal["courier_id", "restaurant_id", "customer_uid"] | None = None
    value: str = ""

    def admits(self, order: OrderRow) -> bool:
        """The same rule as the SQL filter, for one order in hand (ids are never empty)."""
        return self.column is None or (
            bool(self.value) and getattr(order, self.column) == self.value
        )


_SELECT = f"SELECT {ORDER_COLUMNS} FROM orders"  # noqa: S608
_LOAD = f"{_SELECT} WHERE id = %s"
_LOAD_FOR_UPDATE = f"{_LOAD} FOR UPDATE"
_INSERT = f"""
INSERT INTO orders (id, restaurant_id, customer_uid, pickup_lat, pickup_lon,
                    dropoff_lat, dropoff_lon, promised_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {ORDER_COLUMNS}
"""  # noqa: S608
_VISIBLE = {
    None: "TRUE",
    "courier_id": "courier_id = %s",
    "restaurant_id": "restaurant_id = %s",
    "customer_uid": "customer_uid = %s",
}
_PAGE = " ORDER BY created_at DESC, id LIMIT %s OFFSET %s"
_SET_STATUS = f"""
UPDATE orders SET status = %s, eta = %s, eta_computed_at = now(), updated_at = %s,
    delivered_at = %s, version = version + 1
WHERE id = %s RETURNING {ORDER_COLUMNS}
"""  # noqa: S608
_SET_COURIER = f"""
UPDATE orders SET courier_id = %s, status = %s, eta = %s,
    eta_computed_at = now(), updated_at = %s, version = version + 1
WHERE id = %s RETURNING {ORDER_COLUMNS}
"""  # noqa: S608
# An ETA that moved enough to be announced is a new version; a silent recomputation is not.
_SET_ETA = (
    "UPDATE orders SET eta = %s, eta_computed_at = now(), version = version + %s WHERE id = %s"
)
_OPEN = f"{_SELECT} WHERE status <> ALL(%s) ORDER BY updated_at DESC LIMIT %s"
_OPEN_OF_RESTAURANT = f"{_SELECT} WHERE restaurant_id = %s AND status <> ALL(%s)"
_ACTIVE_OF_COURIER = f"{_SELECT} WHERE courier_id = %s AND status = ANY(%s)"
# Orders whose courier sent a fix since their ETA was computed, at most once per interval.
# SKIP LOCKED lets several API instances share the work without doing it twice.
_DUE_FOR_ETA = f"""
SELECT {", ".join("o." + c.strip() for c in ORDER_COLUMNS.split(","))}
FROM orders o
JOIN last_positions lp ON lp.source_kind = 'courier' AND lp.source_id = o.courier_id
WHERE o.status = ANY(%s)
  AND (o.eta_computed_at IS NULL
       OR (lp.received_at > o.eta_computed_at
           AND o.eta_computed_at <= now() - make_interval(secs => %s)))
ORDER BY o.eta_computed_at NULLS FIRST
LIMIT %s
FOR UPDATE OF o SKIP LOCKED
"""  # noqa: S608
_CLOSE_ASSIGNMENTS = (
    "UPDATE assignments SET unassigned_at = %s WHERE order_id = %s AND unassigned_at IS NULL"
)
_OPEN_ASSIGNMENT = (
    "INSERT INTO assignments (order_id, courier_id, assigned_by, assigned_at)"
    " VALUES (%s, %s, %s, %s)"
)
_INSERT_EVENT = """
INSERT INTO order_events (event_time, kind, source_kind, source_id, order_id, payload, dedup_key)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dedup_key) DO NOTHING
"""
_HISTORY = """
SELECT event_time, kind, source_kind, source_id, payload
FROM order_events WHERE order_id = %s ORDER BY event_time, id
"""
_COURIER_EXISTS = "SELECT 1 FROM couriers WHERE id = %s"
_RESTAURANT_EXISTS = "SELECT 1 FROM restaurants WHERE id = %s"


@dataclass(frozen=True, slots=True)
class OrderEventRow:
    """One entry of an order's history (``order_events``)."""

    time: datetime
    kind: str
    source_kind: str
    source_id: str
    payload: dict[str, Any]


async def _fetch(
    conn: AsyncConnection[Any], query: str, params: Sequence[object]
) -> list[OrderRow]:
    """Rows as OrderRow, whatever row factory the caller's connection has."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return [OrderRow.from_record(row) for row in await cur.fetchall()]


async def _fetch_one(
    conn: AsyncConnection[Any], query: str, params: Sequence[object]
) -> OrderRow | None:
    rows = await _fetch(conn, query, params)
    return rows[0] if rows else None


async def _exists(conn: AsyncConnection[Any], query: str, key: str) -> bool:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, (key,))
        return await cur.fetchone() is not None


async def load_order(
    conn: AsyncConnection[Any], order_id: str, *, for_update: bool = False
) -> OrderRow | None:
    """The order, or None; `for_update` locks it for the caller's transaction."""
    return await _fetch_one(conn, _LOAD_FOR_UPDATE if for_update else _LOAD, (order_id,))


async def insert_order(
    conn: AsyncConnection[Any],
    *,
    order_id: str,
    restaurant_id: str,
    customer_uid: str,
    pickup: tuple[float, float],
    dropoff: tuple[float, float],
    promised_at: datetime,
) -> OrderRow:
    """A new pending order; pickup and drop-off are (lat, lon)."""
    row = await _fetch_one(
        conn,
        _INSERT,
        (order_id, restaurant_id, customer_uid, *pickup, *dropoff, promised_at),
    )
    assert row is not None
    return row


async def list_visible(
    conn: AsyncConnection[Any],
    visibility: Visibility,
    *,
    status: Status | str | None = None,
    limit: int,
    offset: int = 0,
) -> list[OrderRow]:
    """The orders `visibility` allows, optionally of one status; newest first."""
    where = _VISIBLE[visibility.column]
    params: tuple[object, ...] = () if visibility.column is None else (visibility.value,)
    if status is not None:
        where += " AND status = %s"
        params = (*params, str(status))
    query = f"{_SELECT} WHERE {where}{_PAGE}"
    return await _fetch(conn, query, (*params, limit, offset))


async def set_status(
    conn: AsyncConnection[Any],
    order_id: str,
    *,
    status: Status,
    eta: datetime | None,
    at: datetime,
) -> OrderRow:
    """Store a workflow step: the status, its ETA, `delivered_at` when delivered."""
    delivered_at = at if status == Status.DELIVERED else None
    row = await _fetch_one(conn, _SET_STATUS, (str(status), eta, at, delivered_at, order_id))
    assert row is not None, f"no order {order_id!r}"
    return row


async def set_courier(
    conn: AsyncConnection[Any],
    order_id: str,
    *,
    courier_id: str,
    status: Status,
    eta: datetime | None,
    at: datetime,
) -> OrderRow:
    """Store an (re)assignment: the courier, the status it leaves and the new ETA."""
    row = await _fetch_one(conn, _SET_COURIER, (courier_id, str(status), eta, at, order_id))
    assert row is not None, f"no order {order_id!r}"
    return row


async def set_eta(
    conn: AsyncConnection[Any], order_id: str, eta: datetime | None, *, new_version: bool
) -> None:
    """Store a recomputed ETA; `new_version` when the change is announced."""
    await conn.execute(_SET_ETA, (eta, 1 if new_version else 0, order_id))


async def close_assignments(conn: AsyncConnection[Any], order_id: str, *, at: datetime) -> None:
    """End the order's open assignment (if any) at `at`."""
    await conn.execute(_CLOSE_ASSIGNMENTS, (at, order_id))


async def open_assignment(
    conn: AsyncConnection[Any], order_id: str, *, courier_id: str, by: str, at: datetime
) -> None:
    await conn.execute(_OPEN_ASSIGNMENT, (order_id, courier_id, by, at))


async def insert_event(
    conn: AsyncConnection[Any],
    *,
    order_id: str,
    kind: str,
    at: datetime,
    source: tuple[str, str],
    payload_json: str,
    dedup_key: str,
) -> None:
    """Add to the order's history; a repeated `dedup_key` is stored once.
    `source` is (source_kind, source_id)."""
    await conn.execute(_INSERT_EVENT, (at, kind, *source, order_id, payload_json, dedup_key))


async def history(conn: AsyncConnection[Any], order_id: str) -> list[OrderEventRow]:
    """The order's history, oldest first."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_HISTORY, (order_id,))
        return [OrderEventRow(*row) for row in await cur.fetchall()]


async def courier_exists(conn: AsyncConnection[Any], courier_id: str) -> bool:
    return await _exists(conn, _COURIER_EXISTS, courier_id)


async def restaurant_exists(conn: AsyncConnection[Any], restaurant_id: str) -> bool:
    return await _exists(conn, _RESTAURANT_EXISTS, restaurant_id)


async def open_orders(conn: AsyncConnection[Any], *, limit: int) -> list[OrderRow]:
    """Every order not finished yet, most recently changed first."""
    return await _fetch(conn, _OPEN, (TERMINAL_LIST, limit))


async def open_orders_of_restaurant(
    conn: AsyncConnection[Any], restaurant_id: str
) -> list[OrderRow]:
    """The restaurant's orders that are not finished yet."""
    return await _fetch(conn, _OPEN_OF_RESTAURANT, (restaurant_id, TERMINAL_LIST))


async def active_orders_of_courier(conn: AsyncConnection[Any], courier_id: str) -> list[OrderRow]:
    """The orders a courier carries now."""
    return await _fetch(conn, _ACTIVE_OF_COURIER, (courier_id, ACTIVE_LIST))


async def due_for_eta(
    conn: AsyncConnection[Any], *, interval_s: float, limit: int = 500
) -> list[OrderRow]:
    """Lock the active orders whose ETA is due (a new fix since it was computed, at most
    once per `interval_s`), oldest computation first; others' locked rows are skipped."""
    return await _fetch(conn, _DUE_FOR_ETA, (ACTIVE_LIST, interval_s, limit))


__all__ = [
    "ORDER_COLUMNS",
    "OrderEventRow",
    "OrderRow",
    "Visibility",
    "active_orders_of_courier",
    "close_assignments",
    "courier_exists",
    "due_for_eta",
    "history",
    "insert_event",
    "insert_order",
    "list_visible",
    "load_order",
    "open_assignment",
    "open_orders",
    "open_orders_of_restaurant",
    "restaurant_exists",
    "set_courier",
    "set_eta",
    "set_status",
]
