"""Applying workflow transitions and ETAs to the database (the API is their one writer),
through the queries of store.orders.

Each function runs inside the caller's transaction; the caller queues the announcement of
the returned change in the outbox in that same transaction. Every change of an order
bumps ``orders.version``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import AsyncConnection

from protocol.statuses import ACTIVE, ASSIGNABLE, TERMINAL, Status
from store import orders as store
from store.orders import OrderRow, Visibility
from store.positions import read_last_position, recent_fixes
from workflow.eta import EtaParameters, Fix, estimate_arrival
from workflow.rules import (
    ActorNotAllowedError,
    Role,
    TransitionError,
    allowed_next_for,
    decide,
)


class OrderNotFoundError(Exception):
    """No such order, or one the actor may not see (never say which)."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"order {order_id!r} not found")


@dataclass(frozen=True)
class Actor:
    """Who asks for a change: a role, the user's uid, and the courier/restaurant they are."""

    role: Role
    uid: str
    courier_id: str | None = None
    restaurant_id: str | None = None

    def may_see(self, order: OrderRow) -> bool:
        return self.visibility().admits(order)

    def visibility(self) -> Visibility:
        """The orders the actor may see or list (the SQL filter of store.orders)."""
        if self.role == "admin":
            return Visibility()
        if self.role == "courier":
            return Visibility("courier_id", self.courier_id or "")
        if self.role == "restaurant":
            return Visibility("restaurant_id", self.restaurant_id or "")
        return Visibility("customer_uid", self.uid)


@dataclass(frozen=True)
class StatusChange:
    """The outcome of one requested status change, for the response and the status event.

    `rejected` only comes back with `record_rejection`: the refusal was stored as a
    `status_rejected` event (commit it), `reason` says why and `allowed` what may come next.
    """

    order: OrderRow | None
    previous: Status | None
    status: Status | None
    outcome: Literal["applied", "repeat", "rejected"]
    at: datetime
    actor: Actor
    note: str
    reason: str = ""
    allowed: tuple[Status, ...] = ()


async def apply_status(
    conn: AsyncConnection[Any],
    *,
    order_id: str,
    target: Status | str,
    actor: Actor,
    note: str = "",
    at: datetime | None = None,
    source: Literal["rest", "mqtt"] = "rest",
    dedup_key: str | None = None,
    record_rejection: bool = False,
    eta_params: EtaParameters | None = None,
) -> StatusChange:
    """Validate and apply one status change inside the caller's transaction.

    Raises OrderNotFoundError (unknown, or not the actor's), TransitionError (409, carries
    the allowed next states) or ActorNotAllowedError. With `record_rejection` (MQTT reports)
    nothing is raised: a refused change is stored as a `status_rejected` event and returned
    with outcome `rejected`; the caller commits either way.
    """
    when = at or datetime.now(UTC)
    key = dedup_key or f"{source}:{uuid.uuid4().hex}"
    order = await store.load_order(conn, order_id, for_update=True)
    try:
        if order is None or not actor.may_see(order):
            raise OrderNotFoundError(order_id)
        current = order.status
        decision = decide(current, target, role=actor.role)
    except (OrderNotFoundError, TransitionError, ActorNotAllowedError) as exc:
        if not record_rejection:
            raise
        known = order is not None and actor.may_see(order)
        previous = order.status if order is not None and known else None
        allowed = tuple(allowed_next_for(previous, actor.role)) if previous else ()
        await _insert_event(
            conn,
            kind="status_rejected",
            at=when,
            actor=actor,
            source=source,
            order_id=order_id,
            payload={
                "from": previous,
                "to": str(target),
                "note": note,
                "reason": str(exc),
                "allowed": list(allowed),
            },
            dedup_key=key,
        )
        return StatusChange(
            order if known else None,
            previous,
            previous,
            "rejected",
            when,
            actor,
            note,
            reason=str(exc),
            allowed=allowed,
        )
    if decision.outcome == "repeat":
        return StatusChange(order, current, current, "repeat", when, actor, note)
    wanted = decision.target
    eta = order.eta
    if wanted in ACTIVE and eta_params is not None:
        eta = await compute_eta(conn, order=order.replace(status=wanted), params=eta_params)
    elif wanted not in ACTIVE:
        eta = None
    updated = await store.set_status(conn, order_id, status=wanted, eta=eta, at=when)
    if wanted in TERMINAL:
        await store.close_assignments(conn, order_id, at=max(when, datetime.now(UTC)))
    await _insert_event(
        conn,
        kind="status",
        at=when,
        actor=actor,
        source=source,
        order_id=order_id,
        payload={"from": current, "to": wanted, "note": note, "eta": _iso(eta)},
        dedup_key=key,
    )
    return StatusChange(updated, current, wanted, "applied", when, actor, note)


@dataclass(frozen=True)
class AssignmentChange:
    """An order given to a courier: the order after the change, who had it before, and the
    status it had; `changed` is False when the courier already had it."""

    order: OrderRow
    previous_status: Status
    previous_courier_id: str | None
    at: datetime
    changed: bool


class AssignmentError(Exception):
    """The order cannot take a courier (it is finished)."""


class CourierNotFoundError(Exception):
    def __init__(self, courier_id: str) -> None:
        self.courier_id = courier_id
        super().__init__(f"courier {courier_id!r} not found")


async def assign_courier(
    conn: AsyncConnection[Any],
    *,
    order_id: str,
    courier_id: str,
    actor: Actor,
    eta_params: EtaParameters,
) -> AssignmentChange:
    """Give the order to `courier_id` (assigning a pending order, or reassigning an active
    one) inside the caller's transaction. Raises OrderNotFoundError, CourierNotFoundError
    or AssignmentError."""
    now = datetime.now(UTC)
    order = await store.load_order(conn, order_id, for_update=True)
    if order is None:
        raise OrderNotFoundError(order_id)
    current = order.status
    if current not in ASSIGNABLE:
        raise AssignmentError(
            f"order {order_id!r} is {current}; a finished order keeps its courier"
        )
    if not await store.courier_exists(conn, courier_id):
        raise CourierNotFoundError(courier_id)
    previous_courier = order.courier_id
    if previous_courier == courier_id:
        return AssignmentChange(order, current, previous_courier, now, changed=False)
    await store.close_assignments(conn, order_id, at=now)
    await store.open_assignment(conn, order_id, courier_id=courier_id, by=actor.uid, at=now)
    status = Status.ASSIGNED if current == Status.PENDING else current
    eta = await compute_eta(
        conn, order=order.replace(status=status, courier_id=courier_id), params=eta_params
    )
    updated = await store.set_courier(
        conn, order_id, courier_id=courier_id, status=status, eta=eta, at=now
    )
    await _insert_event(
        conn,
        kind="assignment",
        at=now,
        actor=actor,
        source="rest",
        order_id=order_id,
        payload={"courier_id": courier_id, "previous_courier_id": previous_courier},
        dedup_key=f"rest:{uuid.uuid4().hex}",
    )
    return AssignmentChange(updated, current, previous_courier, now, changed=True)


async def _insert_event(
    conn: AsyncConnection[Any],
    *,
    kind: str,
    at: datetime,
    actor: Actor,
    source: str,
    order_id: str,
    payload: dict[str, Any],
    dedup_key: str,
) -> None:
    if source == "mqtt" and actor.courier_id:
        source_kind, source_id = "courier", actor.courier_id
    else:
        source_kind, source_id = "user", actor.uid
    payload = {**payload, "actor": {"role": actor.role, "uid": actor.uid}, "source": source}
    await store.insert_event(
        conn,
        order_id=order_id,
        kind=kind,
        at=at,
        source=(source_kind, source_id),
        payload_json=json.dumps(payload, default=str),
        dedup_key=dedup_key,
    )


async def compute_eta(
    conn: AsyncConnection[Any], *, order: OrderRow, params: EtaParameters
) -> datetime | None:
    """The order's ETA from its courier's last position and recent fixes; None without a
    courier or without any fix."""
    status = order.status
    if order.courier_id is None or status not in ACTIVE:
        return None
    stored = await read_last_position(conn, kind="courier", source_id=order.courier_id)
    if stored is None:
        return None
    last = Fix(stored.fix_time, stored.lat, stored.lon, stored.speed)
    recent = [
        Fix(*row)
        for row in await recent_fixes(
            conn,
            kind="courier",
            source_id=order.courier_id,
            after=last.time - timedelta(seconds=params.window_s),
            until=last.time,
            limit=200,
        )
    ]
    return estimate_arrival(
        last=last,
        recent=recent,
        picked_up=status != Status.ASSIGNED,
        pickup=(order.pickup_lat, order.pickup_lon),
        dropoff=(order.dropoff_lat, order.dropoff_lon),
        now=datetime.now(UTC),
        params=params,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
