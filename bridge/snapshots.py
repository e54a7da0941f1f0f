"""What a page needs to draw at once: last known positions and presence."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bridge.orders import order_from_row
from protocol.frames import Location, OrderSummary, location
from store.orders import open_orders
from store.positions import read_last_positions
from store.presence import CourierPresence, read_presence


class Snapshots:
    def __init__(self, pool: AsyncConnectionPool[Any], *, fleet_limit: int = 50_000) -> None:
        self._pool = pool
        self._fleet_limit = fleet_limit

    async def _last_positions(self, couriers: Collection[str] | None) -> list[Location]:
        """Stored newest fixes: of the given couriers, or of every source."""
        async with self._pool.connection() as conn:
            stored = await read_last_positions(
                conn,
                kind=None if couriers is None else "courier",
                source_ids=couriers,
                limit=self._fleet_limit,
            )
        return [location(row) for row in stored]

    async def open_orders(self) -> list[OrderSummary]:
        """Every order not finished yet, for the admin's fleet snapshot."""
        async with self._pool.connection() as conn:
            rows = await open_orders(conn, limit=self._fleet_limit)
        return [order_from_row(row).summary() for row in rows]

    @staticmethod
    def _newest(
        stored: list[Location], relayed: Mapping[str, Location], keys: Collection[str]
    ) -> list[Location]:
        newest: dict[str, Location] = {fix.key: fix for fix in stored}
        for key in keys:
            fix = relayed.get(key)
            if fix is not None and (key not in newest or fix.ts > newest[key].ts):
                newest[key] = fix
        return list(newest.values())

    async def positions(
        self, couriers: Collection[str], relayed: Mapping[str, Location]
    ) -> list[Location]:
        """The last known position of each courier: the newer of the stored one (ingest)
        and the last one this bridge relayed."""
        if not couriers:
            return []
        stored = await self._last_positions(couriers)
        keys = [f"courier:{c}" for c in couriers]
        return self._newest(stored, relayed, keys)

    async def presence(self, couriers: Collection[str] | None) -> dict[str, CourierPresence]:
        """The stored presence (by arrival) of the given couriers, or of all."""
        async with self._pool.connection() as conn:
            return await read_presence(conn, couriers)

    async def fleet_positions(self, relayed: Mapping[str, Location]) -> list[Location]:
        """The last known position of every source, for the admin's fleet snapshot."""
        stored = await self._last_positions(None)
        return self._newest(stored, relayed, list(relayed))
