"""Restaurants, couriers and vehicles: admins manage them; availability comes from presence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from psycopg.rows import dict_row

from api.errors import ERROR_RESPONSES, NotFound
from api.schemas import (
    Courier,
    CourierIn,
    CourierPatch,
    Restaurant,
    RestaurantIn,
    RestaurantPatch,
    Vehicle,
    VehicleIn,
    VehiclePatch,
)
from api.security import AdminPrincipal, CurrentPrincipal, require
from api.state import ApiState, State
from store.presence import CourierPresence, read_presence

router = APIRouter(responses=ERROR_RESPONSES)

IdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


async def _insert(state: ApiState, table: str, values: dict[str, Any]) -> dict[str, Any]:
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    async with state.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING *",  # noqa: S608
            list(values.values()),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def _update(
    state: ApiState, table: str, entity_id: str, values: dict[str, Any], what: str
) -> dict[str, Any]:
    async with state.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
        if values:
            assignments = ", ".join(f"{column} = %s" for column in values)
            await cur.execute(
                f"UPDATE {table} SET {assignments} WHERE id = %s RETURNING *",  # noqa: S608
                [*values.values(), entity_id],
            )
        else:
            await cur.execute(f"SELECT * FROM {table} WHERE id = %s", (entity_id,))  # noqa: S608
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"{what} {entity_id!r} not found")
    return row


async def _delete(state: ApiState, table: str, entity_id: str, what: str) -> None:
    async with state.transaction() as conn:
        cur = await conn.execute(f"DELETE FROM {table} WHERE id = %s", (entity_id,))  # noqa: S608
        if cur.rowcount == 0:
            raise NotFound(f"{what} {entity_id!r} not found")


async def _get(state: ApiState, table: str, entity_id: str, what: str) -> dict[str, Any]:
    async with state.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT * FROM {table} WHERE id = %s", (entity_id,))  # noqa: S608
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"{what} {entity_id!r} not found")
    return row


async def _list(state: ApiState, table: str, limit: int, offset: int) -> list[dict[str, Any]]:
    async with state.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT * FROM {table} ORDER BY id LIMIT %s OFFSET %s", (limit, offset))  # noqa: S608
        return await cur.fetchall()


# --- restaurants ------------------------------------------------------------------------


@router.post("/restaurants", status_code=201, tags=["fleet"])
async def create_restaurant(body: RestaurantIn, state: State, _: AdminPrincipal) -> Restaurant:
    return Restaurant(**await _insert(state, "restaurants", body.model_dump()))


@router.get("/restaurants", tags=["fleet"])
async def list_restaurants(
    state: State, _: AdminPrincipal, limit: Limit = 100, offset: Offset = 0
) -> list[Restaurant]:
    return [Restaurant(**row) for row in await _list(state, "restaurants", limit, offset)]


@router.get("/restaurants/{restaurant_id}", tags=["fleet"])
async def get_restaurant(
    restaurant_id: IdPath, state: State, principal: CurrentPrincipal
) -> Restaurant:
    """Admins read any restaurant; a restaurant reads itself."""
    require(principal, "admin", "restaurant")
    if principal.role == "restaurant" and principal.restaurant_id != restaurant_id:
        raise NotFound(f"restaurant {restaurant_id!r} not found")
    return Restaurant(**await _get(state, "restaurants", restaurant_id, "restaurant"))


@router.patch("/restaurants/{restaurant_id}", tags=["fleet"])
async def update_restaurant(
    restaurant_id: IdPath, body: RestaurantPatch, state: State, _: AdminPrincipal
) -> Restaurant:
    values = body.model_dump(exclude_unset=True, exclude_none=True)
    return Restaurant(**await _update(state, "restaurants", restaurant_id, values, "restaurant"))


@router.delete("/restaurants/{restaurant_id}", status_code=204, tags=["fleet"])
async def delete_restaurant(restaurant_id: IdPath, state: State, _: AdminPrincipal) -> Response:
    await _delete(state, "restaurants", restaurant_id, "restaurant")
    return Response(status_code=204)


# --- couriers ---------------------------------------------------------------------------

COURIER_COLUMNS = "SELECT c.id, c.name, c.phone, c.created_at FROM couriers c"


def _courier(
    row: dict[str, Any], presence: CourierPresence | None, now: datetime, timeout_s: float
) -> Courier:
    """The courier with availability and last seen time by the one definition
    (store.presence; docs/api.md, "Availability")."""
    return Courier(
        id=row["id"],
        name=row["name"],
        phone=row["phone"],
        created_at=row["created_at"],
        availability=presence.availability(now=now, timeout_s=timeout_s)
        if presence is not None
        else "offline",
        last_seen=presence.last_heard if presence is not None else None,
    )


async def _couriers(state: ApiState, where: str, params: tuple[Any, ...]) -> list[Courier]:
    async with state.transaction() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(COURIER_COLUMNS + where, params)
            rows = await cur.fetchall()
        presence = await read_presence(conn, [row["id"] for row in rows])
    now = datetime.now(UTC)
    timeout_s = state.settings.presence_timeout_s
    return [_courier(row, presence.get(row["id"]), now, timeout_s) for row in rows]


@router.post("/couriers", status_code=201, tags=["fleet"])
async def create_courier(body: CourierIn, state: State, _: AdminPrincipal) -> Courier:
    await _insert(state, "couriers", body.model_dump())
    return (await _couriers(state, " WHERE c.id = %s", (body.id,)))[0]


@router.get("/couriers", tags=["fleet"])
async def list_couriers(
    state: State, _: AdminPrincipal, limit: Limit = 100, offset: Offset = 0
) -> list[Courier]:
    """Every courier with their availability (online, offline or busy) and last seen time."""
    return await _couriers(state, " ORDER BY c.id LIMIT %s OFFSET %s", (limit, offset))


@router.get("/couriers/{courier_id}", tags=["fleet"])
async def get_courier(courier_id: IdPath, state: State, principal: CurrentPrincipal) -> Courier:
    """Admins read any courier; a courier reads themself."""
    require(principal, "admin", "courier")
    if principal.role == "courier" and principal.courier_id != courier_id:
        raise NotFound(f"courier {courier_id!r} not found")
    found = await _couriers(state, " WHERE c.id = %s", (courier_id,))
    if not found:
        raise NotFound(f"courier {courier_id!r} not found")
    return found[0]


@router.patch("/couriers/{courier_id}", tags=["fleet"])
async def update_courier(
    courier_id: IdPath, body: CourierPatch, state: State, _: AdminPrincipal
) -> Courier:
    values = body.model_dump(exclude_unset=True)
    if "name" in values and values["name"] is None:
        del values["name"]
    await _update(state, "couriers", courier_id, values, "courier")
    return (await _couriers(state, " WHERE c.id = %s", (courier_id,)))[0]


@router.delete("/couriers/{courier_id}", status_code=204, tags=["fleet"])
async def delete_courier(courier_id: IdPath, state: State, _: AdminPrincipal) -> Response:
    await _delete(state, "couriers", courier_id, "courier")
    return Response(status_code=204)


# --- vehicles ---------------------------------------------------------------------------


@router.post("/vehicles", status_code=201, tags=["fleet"])
async def create_vehicle(body: VehicleIn, state: State, _: AdminPrincipal) -> Vehicle:
    return Vehicle(**await _insert(state, "vehicles", body.model_dump()))


@router.get("/vehicles", tags=["fleet"])
async def list_vehicles(
    state: State, _: AdminPrincipal, limit: Limit = 100, offset: Offset = 0
) -> list[Vehicle]:
    return [Vehicle(**row) for row in await _list(state, "vehicles", limit, offset)]


@router.get("/vehicles/{vehicle_id}", tags=["fleet"])
async def get_vehicle(vehicle_id: IdPath, state: State, _: AdminPrincipal) -> Vehicle:
    return Vehicle(**await _get(state, "vehicles", vehicle_id, "vehicle"))


@router.patch("/vehicles/{vehicle_id}", tags=["fleet"])
async def update_vehicle(
    vehicle_id: IdPath, body: VehiclePatch, state: State, _: AdminPrincipal
) -> Vehicle:
    values = body.model_dump(exclude_unset=True)
    if "label" in values and values["label"] is None:
        del values["label"]
    return Vehicle(**await _update(state, "vehicles", vehicle_id, values, "vehicle"))


@router.delete("/vehicles/{vehicle_id}", status_code=204, tags=["fleet"])
async def delete_vehicle(vehicle_id: IdPath, state: State, _: AdminPrincipal) -> Response:
    await _delete(state, "vehicles", vehicle_id, "vehicle")
    return Response(status_code=204)


__all__ = ["router"]
