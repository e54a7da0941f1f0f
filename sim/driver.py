"""The demo driver: sets up restaurants, couriers, vehicles and their device credentials
through the REST API, then keeps creating orders and assigning each to the nearest free
courier, so orders walk through the whole workflow."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from protocol.statuses import ACTIVE_LIST
from sim.fleet import DeviceLogin
from sim.geo import CityBox, Point, distance_m, offset

log = logging.getLogger("sim.driver")

ACTIVE = tuple(ACTIVE_LIST)
RESTAURANT_NAMES = (
    "Curry Corner",
    "Pho Real",
    "Pizza Nord",
    "Falafel Haus",
    "Ramen Ya",
    "Burger Werk",
    "Taco Libre",
    "Sushi Spree",
    "Döner Eck",
    "Green Bowl",
)


class ApiError(Exception):
    """The API refused a call the demo needs; the message carries its answer."""


@dataclass
class DriverCounters:
    orders_created: int = 0
    orders_assigned: int = 0
    orders_by_status: Counter[str] = field(default_factory=Counter)


class DemoDriver:
    def __init__(
        self,
        *,
        api_url: str,
        admin_token: str,
        city: CityBox,
        rng: random.Random,
        customers: list[str],
        run_id: str,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=api_url,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=httpx.Timeout(10.0),
        )
        self._city = city
        self._rng = rng
        self._customers = customers
        self._run_id = run_id
        self._restaurants: dict[str, Point] = {}
        self._order_seq = 0
        self._started = datetime.now(UTC)
        self.counters = DriverCounters()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self, method: str, path: str, *, ok: tuple[int, ...], **kwargs: Any
    ) -> httpx.Response:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code not in ok:
            raise ApiError(
                f"{method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        return response

    async def wait_until_ready(self, *, within_s: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + within_s
        while True:
            try:
                if (await self._http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise ApiError(
                    f"the API at {self._http.base_url} was not ready within {within_s:.0f} s"
                )
            await asyncio.sleep(0.5)

    async def create_restaurants(self, count: int) -> dict[str, Point]:
        for index in range(count):
            restaurant_id = f"r-{index + 1}"
            where = self._city.random_point(self._rng)
            name = RESTAURANT_NAMES[index % len(RESTAURANT_NAMES)]
            await self._call(
                "POST",
                "/restaurants",
                ok=(201, 409),
                json={"id": restaurant_id, "name": name, "lat": where.lat, "lon": where.lon},
            )
            current = (await self._call("GET", f"/restaurants/{restaurant_id}", ok=(200,))).json()
            self._restaurants[restaurant_id] = Point(current["lat"], current["lon"])
        return dict(self._restaurants)

    async def enrol(self, owner_kind: str, owner_id: str, name: str) -> DeviceLogin:
        """Create the courier or vehicle (if new) and fresh MQTT credentials for its device."""
        body = (
            {"id": owner_id, "name": name}
            if owner_kind == "courier"
            else {"id": owner_id, "label": name}
        )
        await self._call("POST", f"/{owner_kind}s", ok=(201, 409), json=body)
        created = await self._call(
            "POST", "/devices", ok=(201, 409), json={"owner_kind": owner_kind, "owner_id": owner_id}
        )
        if created.status_code == 409:
            created = await self._call(
                "POST", f"/devices/{owner_kind}/{owner_id}/rotate", ok=(200, 201)
            )
        credentials = created.json()
        return DeviceLogin(
            credentials["username"], credentials["password"], credentials.get("client_id")
        )

    async def create_order(self, *, customer: str | None = None) -> str:
        restaurant_id = self._rng.choice(sorted(self._restaurants))
        pickup = self._restaurants[restaurant_id]
        dropoff = offset(
            pickup, north_m=self._rng.uniform(-1500, 1500), east_m=self._rng.uniform(-1500, 1500)
        )
        self._order_seq += 1
        order_id = f"o-{self._run_id}-{self._order_seq}"
        promised = datetime.now(UTC) + timedelta(minutes=self._rng.uniform(20, 40))
        await self._call(
            "POST",
            "/orders",
            ok=(201,),
            json={
                "id": order_id,
                "restaurant_id": restaurant_id,
                "customer_uid": customer or self._rng.choice(self._customers),
                "pickup": {"lat": pickup.lat, "lon": pickup.lon},
                "dropoff": {"lat": dropoff.lat, "lon": dropoff.lon},
                "promised_at": promised.isoformat(),
            },
        )
        self.counters.orders_created += 1
        return order_id

    async def _orders(self, status: str) -> list[dict[str, Any]]:
        response = await self._call(
            "GET", "/orders", ok=(200,), params={"status": status, "limit": 1000}
        )
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def assign_pending(self, courier_ids: list[str]) -> int:
        """Give each pending order to the nearest courier without an active order."""
        pending = await self._orders("pending")
        if not pending:
            return 0
        busy = {order["courier_id"] for status in ACTIVE for order in await self._orders(status)}
        latest = (await self._call("GET", "/positions/latest", ok=(200,))).json()["items"]
        where = {
            item["source_id"]: Point(item["lat"], item["lon"])
            for item in latest
            if item["source_kind"] == "courier"
        }
        free = [c for c in courier_ids if c not in busy and c in where]
        assigned = 0
        for order in sorted(pending, key=lambda o: o["created_at"]):
            if not free:
                break
            pickup = Point(order["pickup"]["lat"], order["pickup"]["lon"])
            nearest = min(free, key=lambda c: distance_m(where[c], pickup))
            free.remove(nearest)
            await self._call(
                "POST", f"/orders/{order['id']}/assignment", ok=(200,), json={"courier_id": nearest}
            )
            assigned += 1
        self.counters.orders_assigned += assigned
        return assigned

    async def count_by_status(self) -> Counter[str]:
        """Orders created since the demo started, by status (one analytics call, uncapped)."""
        response = await self._call(
            "GET", "/analytics", ok=(200,), params={"start": self._started.isoformat()}
        )
        order = ("pending", *ACTIVE, "delivered", "cancelled")
        by_status: dict[str, int] = response.json()["orders_by_status"]
        counts = Counter({status: by_status.get(status, 0) for status in order})
        self.counters.orders_by_status = counts
        return counts

    async def keep_ordering(self, *, courier_ids: list[str], interval_s: float) -> None:
        """Runs until cancelled: a new order every `interval_s`, assignments every second."""
        loop = asyncio.get_running_loop()
        next_order = loop.time()
        while True:
            try:
                if loop.time() >= next_order:
                    next_order += interval_s * self._rng.uniform(0.5, 1.5)
                    await self.create_order()
                await self.assign_pending(courier_ids)
            except (ApiError, httpx.TransportError) as exc:
                log.warning("demo driver: %s", exc)
            await asyncio.sleep(1.0)
