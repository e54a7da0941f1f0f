"""Orders: creation, visibility by role (someone else's order is 404), assignment, the
status workflow (single and batch) and each order's event history."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.announcements import announce_assignment, announce_order_event, announce_status_change
from api.errors import ERROR_RESPONSES, Conflict, Forbidden, InvalidTransition, NotFound
from api.schemas import (
    AssignmentIn,
    BatchStatusIn,
    BatchStatusOut,
    BatchStatusResult,
    Order,
    OrderEvent,
    OrderEventList,
    OrderIn,
    OrderList,
    Point,
    StatusIn,
)
from api.security import CurrentPrincipal, actor_of, require
from api.state import ApiState, State
from protocol.statuses import Status
from store import orders as store
from store.orders import OrderRow
from workflow import (
    ActorNotAllowedError,
    OrderNotFoundError,
    StatusChange,
    TransitionError,
    allowed_next_for,
    apply_status,
)
from workflow.orders import (
    Actor,
    AssignmentError,
    CourierNotFoundError,
    assign_courier,
)

router = APIRouter(responses=ERROR_RESPONSES, tags=["orders"])

OrderIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def order_out(row: OrderRow, actor: Actor) -> Order:
    return Order(
        id=row.id,
        restaurant_id=row.restaurant_id,
        customer_uid=row.customer_uid,
        pickup=Point(lat=row.pickup_lat, lon=row.pickup_lon),
        dropoff=Point(lat=row.dropoff_lat, lon=row.dropoff_lon),
        promised_at=row.promised_at,
        status=row.status,
        courier_id=row.courier_id,
        eta=row.eta,
        created_at=row.created_at,
        updated_at=row.updated_at,
        delivered_at=row.delivered_at,
        allowed_next=[str(s) for s in allowed_next_for(row.status, actor.role)],
    )


@router.post("/orders", status_code=201)
async def create_order(body: OrderIn, state: State, principal: CurrentPrincipal) -> Order:
    """A restaurant creates orders for itself; an admin for any restaurant."""
    require(principal, "admin", "restaurant")
    actor = actor_of(principal)
    if actor.role == "restaurant" and body.restaurant_id != actor.restaurant_id:
        raise Forbidden("a restaurant may create orders only for itself")
    async with state.transaction() as conn:
        if not await store.restaurant_exists(conn, body.restaurant_id):
            raise NotFound(f"restaurant {body.restaurant_id!r} not found")
        row = await store.insert_order(
            conn,
            order_id=body.id,
            restaurant_id=body.restaurant_id,
            customer_uid=body.customer_uid,
            pickup=(body.pickup.lat, body.pickup.lon),
            dropoff=(body.dropoff.lat, body.dropoff.lon),
            promised_at=body.promised_at,
        )
    return order_out(row, actor)


@router.get("/orders")
async def list_orders(
    state: State,
    principal: CurrentPrincipal,
    status: Annotated[Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> OrderList:
    """The orders the caller may see: all (admin), their restaurant's, their deliveries
    (courier) or their own (customer); newest first."""
    actor = actor_of(principal)
    async with state.transaction() as conn:
        rows = await store.list_visible(
            conn, actor.visibility(), status=status, limit=limit, offset=offset
        )
    return OrderList(items=[order_out(r, actor) for r in rows])


@router.get("/orders/{order_id}")
async def get_order(order_id: OrderIdPath, state: State, principal: CurrentPrincipal) -> Order:
    actor = actor_of(principal)
    async with state.transaction() as conn:
        row = await store.load_order(conn, order_id)
    if row is None or not actor.may_see(row):
        raise NotFound(f"order {order_id!r} not found")
    return order_out(row, actor)


@router.get("/orders/{order_id}/events")
async def order_events(
    order_id: OrderIdPath, state: State, principal: CurrentPrincipal
) -> OrderEventList:
    """The order's history: assignments, status changes (with actor, time and note) and
    rejected courier reports."""
    actor = actor_of(principal)
    async with state.transaction() as conn:
        row = await store.load_order(conn, order_id)
        if row is None or not actor.may_see(row):
            raise NotFound(f"order {order_id!r} not found")
        rows = await store.history(conn, order_id)
    return OrderEventList(items=[OrderEvent(**asdict(r)) for r in rows])


@router.post("/orders/{order_id}/assignment")
async def assign_order(
    order_id: OrderIdPath, body: AssignmentIn, state: State, principal: CurrentPrincipal
) -> Order:
    """Assign or reassign a courier (admin). The courier gets the assignment on
    `fleet/couriers/{id}/assignments` at QoS 1, a previous courier an unassignment, and the
    order's status event goes out for the bridge (all through the outbox)."""
    require(principal, "admin")
    actor = actor_of(principal)
    prefix = state.settings.topic_prefix
    try:
        async with state.transaction() as conn:
            change = await assign_courier(
                conn,
                order_id=order_id,
                courier_id=body.courier_id,
                actor=actor,
                eta_params=state.eta_params,
            )
            if not change.changed:
                return order_out(change.order, actor)
            if change.previous_courier_id is not None:
                await announce_assignment(
                    conn,
                    prefix,
                    change.order,
                    courier_id=change.previous_courier_id,
                    kind="unassignment",
                    ts=change.at,
                    reason=f"reassigned to {body.courier_id}",
                )
            await announce_assignment(
                conn,
                prefix,
                change.order,
                courier_id=body.courier_id,
                kind="assignment",
                ts=change.at,
            )
            await announce_order_event(
                conn,
                prefix,
                change.order,
                event="assignment",
                previous_status=change.previous_status,
                ts=change.at,
                actor=actor.uid,
                previous_courier_id=change.previous_courier_id,
            )
    except (OrderNotFoundError, CourierNotFoundError) as exc:
        raise NotFound(str(exc)) from None
    except AssignmentError as exc:
        raise Conflict(str(exc)) from None
    return order_out(change.order, actor)


async def _change_status(
    state: ApiState, actor: Actor, order_id: str, status: str, note: str
) -> StatusChange:
    async with state.transaction() as conn:
        change = await apply_status(
            conn,
            order_id=order_id,
            target=status,
            actor=actor,
            note=note,
            source="rest",
            eta_params=state.eta_params,
        )
        if change.outcome == "applied":
            await announce_status_change(conn, state.settings.topic_prefix, change)
    return change


@router.post("/orders/{order_id}/status")
async def change_status(
    order_id: OrderIdPath, body: StatusIn, state: State, principal: CurrentPrincipal
) -> Order:
    """Move an order along the workflow: assigned → picked_up → out_for_delivery →
    delivered, or cancelled before delivery. An invalid move answers 409 with the allowed
    next states; repeating the current status is harmless. Couriers move only their own
    orders; restaurants may only cancel, before pickup."""
    actor = actor_of(principal)
    try:
        change = await _change_status(state, actor, order_id, body.status, body.note)
    except OrderNotFoundError as exc:
        raise NotFound(str(exc)) from None
    except TransitionError as exc:
        allowed = [str(s) for s in allowed_next_for(exc.current, actor.role)]
        raise InvalidTransition(str(exc), allowed=allowed) from None
    except ActorNotAllowedError as exc:
        raise Forbidden(str(exc)) from None
    assert change.order is not None
    return order_out(change.order, actor)


@router.post("/orders/status-batch")
async def change_status_batch(
    body: BatchStatusIn, state: State, principal: CurrentPrincipal
) -> BatchStatusOut:
    """Many status changes at once; each item is applied in its own transaction and gets
    its own result, so one bad item never blocks the others."""
    actor = actor_of(principal)
    return BatchStatusOut(
        results=[
            await _batch_item(state, actor, item.order_id, item.status, item.note)
            for item in body.items
        ]
    )


async def _batch_item(
    state: ApiState, actor: Actor, order_id: str, status: str, note: str
) -> BatchStatusResult:
    try:
        change = await _change_status(state, actor, order_id, status, note)
    except OrderNotFoundError as exc:
        return BatchStatusResult(
            order_id=order_id, http_status=404, outcome="not_found", message=str(exc)
        )
    except TransitionError as exc:
        return BatchStatusResult(
            order_id=order_id,
            http_status=409,
            outcome="rejected",
            status=exc.current,
            message=str(exc),
            allowed=[str(s) for s in allowed_next_for(exc.current, actor.role)],
        )
    except ActorNotAllowedError as exc:
        return BatchStatusResult(
            order_id=order_id, http_status=403, outcome="forbidden", message=str(exc)
        )
    except (NotFound, Conflict) as exc:
        return BatchStatusResult(
            order_id=order_id, http_status=exc.status_code, outcome="rejected", message=str(exc)
        )
    return BatchStatusResult(
        order_id=order_id,
        http_status=200,
        outcome=change.outcome,
        status=change.status,
    )
