"""The bridge applies the API's announcements by version, once, and never shows a courier
to a customer or restaurant once the order is delivered or cancelled.

Real Mosquitto, real PostgreSQL, a real `python -m bridge` and real WebSocket clients. A
leak is looked for up to a sentinel: a fix of a second courier the sockets may see, published
on the same MQTT connection after everything else, so it reaches the bridge last; positions
leave a socket's queue in the order their sources were queued, so a leaked position would be
written before the sentinel's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import psycopg
import pytest
from msgspec.structs import replace
from psycopg_pool import AsyncConnectionPool

from auth import Principal
from bridge.announcements import Announcements
from bridge.client import Client
from bridge.hub import Hub
from bridge.metrics import BridgeMetrics
from bridge.orders import OrderDirectory
from bridge.snapshots import Snapshots
from bridge.subscriptions import SubscriptionManager
from bridge.topics import Topics
from broker.accounts import ServiceAccount
from protocol.server_topics import OrderStatusMessage
from store.orders import load_order
from tests.bridge_support import (
    BridgeProcess,
    Frame,
    WsClient,
    alert_message,
    assignment_message,
    connected,
    fix,
    message_fields,
    next_event_id,
    payload_bytes,
    running_bridge,
    seed_order,
    status_message,
    store_change,
)
from tests.services import Services

pytestmark = pytest.mark.anyio

Db = psycopg.Connection[Any]

_sentinel_lat = itertools.count(1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def bridge(services: Services) -> Iterator[BridgeProcess]:
    with running_bridge(services, bridge_unsubscribe_linger_s="0.2") as running:
        yield running


@contextlib.asynccontextmanager
async def mqtt(services: Services, account: ServiceAccount) -> AsyncIterator[aiomqtt.Client]:
    """One MQTT connection: what it publishes reaches the bridge in publishing order."""
    credentials = services.credentials(account)
    async with aiomqtt.Client(
        services.mosquitto.host,
        services.mosquitto.port,
        username=credentials.username,
        password=credentials.password,
    ) as client:
        yield client


async def publish(client: aiomqtt.Client, topic: str, payload: Any) -> None:
    await client.publish(topic, payload_bytes(payload), qos=1)


def locations_of(frames: list[Frame], courier_id: str) -> list[Frame]:
    return [f for f in frames if f["type"] == "location" and f["id"] == courier_id]


def after_status(frames: list[Frame], order_id: str, status: str) -> list[Frame]:
    """The frames after the first `status` frame of the order with that status."""
    for n, frame in enumerate(frames):
        if frame["type"] == "status" and frame["order"] == order_id and frame["status"] == status:
            return frames[n + 1 :]
    raise AssertionError(f"no {status} frame of {order_id} in {frames}")


@dataclass
class Scene:
    """An order of courier `courier` and, for the sentinel, an order of `sentinel` of the
    same customer and restaurant; both sockets watch both orders."""

    order: str
    courier: str
    sentinel: str
    restaurant: str
    customer_uid: str
    version: int
    sockets: tuple[WsClient, WsClient]

    def status(self, status: str, version: int, **fields: Any) -> OrderStatusMessage:
        return status_message(
            order_id=self.order,
            status=status,
            courier_id=self.courier,
            restaurant_id=self.restaurant,
            customer_uid=self.customer_uid,
            version=version,
            **fields,
        )

    async def close(self) -> None:
        for socket in self.sockets:
            await socket.close()


async def scene(bridge: BridgeProcess, db: Db, unique: str) -> Scene:
    order, sentinel_order = f"o{unique}", f"s{unique}"
    courier, sentinel = f"c{unique}", f"k{unique}"
    restaurant, customer_uid = f"r{unique}", f"u{unique}"
    for order_id, courier_id in ((order, courier), (sentinel_order, sentinel)):
        seed_order(
            db,
            order_id=order_id,
            restaurant_id=restaurant,
            customer_uid=customer_uid,
            courier_id=courier_id,
            status="out_for_delivery",
        )
    customer = await connected(bridge, "customer", customer_uid)
    kitchen = await connected(bridge, "restaurant", f"staff{unique}", restaurant_id=restaurant)
    for socket in (customer, kitchen):
        for order_id in (order, sentinel_order):
            await socket.subscribe(f"order:{order_id}")
    async with await psycopg.AsyncConnection.connect(bridge.services.dsn) as conn:
        stored = await load_order(conn, order)
    assert stored is not None
    return Scene(
        order, courier, sentinel, restaurant, customer_uid, stored.version, (customer, kitchen)
    )


async def until_sentinel(loadgen: aiomqtt.Client, socket: WsClient, sentinel: str) -> None:
    """Publish fixes of the sentinel courier until the socket has one (the MQTT subscription
    made for it may still be on its way at first)."""
    lat = float(next(_sentinel_lat))
    topic = f"fleet/couriers/{sentinel}/location"
    for _ in range(50):
        await publish(loadgen, topic, fix(lat, 1.0))
        with contextlib.suppress(TimeoutError):
            await socket.expect(
                lambda f: f["type"] == "location" and f["id"] == sentinel and f["lat"] == lat,
                within=0.2,
            )
            return
    raise AssertionError(f"the sentinel {sentinel} never reached the socket")


async def see_courier(loadgen: aiomqtt.Client, socket: WsClient, courier: str) -> None:
    topic = f"fleet/couriers/{courier}/location"
    for _ in range(50):
        await publish(loadgen, topic, fix(0.5, 0.5))
        with contextlib.suppress(TimeoutError):
            await socket.expect(
                lambda f: f["type"] == "location" and f["id"] == courier, within=0.2
            )
            return
    raise AssertionError(f"no position of {courier} reached the socket")


@pytest.mark.parametrize("late", ["eta", "status"])
async def test_an_older_announcement_after_delivered_changes_nothing(
    bridge: BridgeProcess, db: Db, unique: str, late: str
) -> None:
    services = bridge.services
    here = await scene(bridge, db, unique)
    stale_before = bridge.metric(
        "bridge_announcements_skipped_total", kind="status", reason="stale"
    )
    async with mqtt(services, "loadgen") as loadgen, mqtt(services, "api") as api:
        for socket in here.sockets:
            await see_courier(loadgen, socket, here.courier)
        topic = f"fleet/orders/{here.order}/status"
        older = await store_change(services.dsn, order_id=here.order, status="out_for_delivery")
        delivered = await store_change(services.dsn, order_id=here.order, status="delivered")
        # Published in the wrong order: the newest change first.
        await publish(api, topic, here.status("delivered", delivered))
        await publish(
            api,
            topic,
            here.status(
                "out_for_delivery",
                older,
                event=late,
                eta=datetime.now(UTC) + timedelta(minutes=5),
            ),
        )
        for n in range(5):
            await publish(loadgen, f"fleet/couriers/{here.courier}/location", fix(10.0 + n, 1.0))
        for socket in here.sockets:
            await until_sentinel(loadgen, socket, here.sentinel)
    for socket in here.sockets:
        after = after_status(socket.frames, here.order, "delivered")
        assert locations_of(after, here.courier) == [], after
        statuses = [f["status"] for f in socket.frames if f.get("order") == here.order]
        # The superseded announcement is not relayed: the page never goes back.
        assert statuses == ["delivered"], statuses
        delivered_frame = next(f for f in socket.frames if f.get("status") == "delivered")
        assert delivered_frame["version"] == delivered
    assert (
        bridge.metric("bridge_announcements_skipped_total", kind="status", reason="stale")
        == stale_before + 1
    )
    await here.close()


async def test_delivered_with_an_older_ts_than_the_last_announcement_ends_positions(
    bridge: BridgeProcess, db: Db, unique: str
) -> None:
    """The phone's clock: its delivered report is stamped before the API's last eta."""
    services = bridge.services
    here = await scene(bridge, db, unique)
    topic = f"fleet/orders/{here.order}/status"
    async with mqtt(services, "loadgen") as loadgen, mqtt(services, "api") as api:
        eta_version = await store_change(
            services.dsn, order_id=here.order, status="out_for_delivery"
        )
        await publish(api, topic, here.status("out_for_delivery", eta_version, event="eta"))
        for socket in here.sockets:
            await socket.expect(lambda f: f["type"] == "status" and f["version"] == eta_version)
            await see_courier(loadgen, socket, here.courier)
        delivered = await store_change(services.dsn, order_id=here.order, status="delivered")
        phone_clock = datetime.now(UTC) - timedelta(minutes=2)
        await publish(api, topic, here.status("delivered", delivered, ts=phone_clock))
        for n in range(5):
            await publish(loadgen, f"fleet/couriers/{here.courier}/location", fix(20.0 + n, 1.0))
        for socket in here.sockets:
            await until_sentinel(loadgen, socket, here.sentinel)
    for socket in here.sockets:
        after = after_status(socket.frames, here.order, "delivered")
        assert locations_of(after, here.courier) == [], after
    await here.close()


async def test_a_delivered_announcement_without_a_version_still_ends_positions(
    bridge: BridgeProcess, db: Db, unique: str
) -> None:
    """Delivered is final whatever the announcement's version (here none, as before the
    outbox): the cache never waits for a version to stop a courier's positions."""
    services = bridge.services
    here = await scene(bridge, db, unique)
    async with mqtt(services, "loadgen") as loadgen, mqtt(services, "api") as api:
        for socket in here.sockets:
            await see_courier(loadgen, socket, here.courier)
        await store_change(services.dsn, order_id=here.order, status="delivered")
        message = message_fields(here.status("delivered", 0))
        del message["version"], message["event_id"]
        await publish(api, f"fleet/orders/{here.order}/status", message)
        for n in range(5):
            await publish(loadgen, f"fleet/couriers/{here.courier}/location", fix(30.0 + n, 1.0))
        for socket in here.sockets:
            await until_sentinel(loadgen, socket, here.sentinel)
    for socket in here.sockets:
        after = after_status(socket.frames, here.order, "delivered")
        assert locations_of(after, here.courier) == [], after
    await here.close()


async def finish_while_streaming(
    bridge: BridgeProcess, db: Db, unique: str, status: str
) -> list[Frame]:
    """Fixes of the courier every 100 ms; `status` is announced in the middle of them and
    ten more fixes follow. The frames of the courier each socket got after `status`."""
    services = bridge.services
    here = await scene(bridge, db, unique)
    published = 0
    progress = asyncio.Condition()
    async with mqtt(services, "loadgen") as loadgen, mqtt(services, "api") as api:

        async def stream() -> None:
            nonlocal published
            for n in itertools.count():
                await publish(loadgen, f"fleet/couriers/{here.courier}/location", fix(n % 80, 1))
                async with progress:
                    published += 1
                    progress.notify_all()
                await asyncio.sleep(0.1)

        streaming = asyncio.create_task(stream())
        try:
            for socket in here.sockets:
                await socket.expect(lambda f: f["type"] == "location" and f["id"] == here.courier)
            version = await store_change(services.dsn, order_id=here.order, status=status)
            await publish(api, f"fleet/orders/{here.order}/status", here.status(status, version))
            for socket in here.sockets:
                await socket.expect(lambda f: f.get("status") == status, within=10)
            async with progress:
                target = published + 10
                await progress.wait_for(lambda: published >= target)
        finally:
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streaming
        for socket in here.sockets:
            await until_sentinel(loadgen, socket, here.sentinel)
    leaked: list[Frame] = []
    for socket in here.sockets:
        leaked += locations_of(after_status(socket.frames, here.order, status), here.courier)
    await here.close()
    return leaked


@pytest.mark.parametrize("status", ["delivered", "cancelled"])
async def test_no_position_leaks_past_the_end_of_an_order_while_the_courier_streams(
    bridge: BridgeProcess, db: Db, unique: str, status: str
) -> None:
    runs = 20
    leaked = await asyncio.gather(
        *(finish_while_streaming(bridge, db, f"{unique}n{n}", status) for n in range(runs))
    )
    assert [len(frames) for frames in leaked] == [0] * runs, leaked


async def test_a_repeated_event_id_is_relayed_once(
    bridge: BridgeProcess, db: Db, unique: str
) -> None:
    services = bridge.services
    here = await scene(bridge, db, unique)
    customer, _ = here.sockets
    repeats_before = bridge.metric(
        "bridge_announcements_skipped_total", kind="status", reason="repeat"
    )
    topic = f"fleet/orders/{here.order}/status"
    async with mqtt(services, "api") as api:
        version = await store_change(services.dsn, order_id=here.order, status="out_for_delivery")
        eta = here.status("out_for_delivery", version, event="eta")
        # The outbox relay crashed after the PUBACK: the same row goes out again.
        await publish(api, topic, eta)
        await publish(api, topic, eta)
        last = await store_change(services.dsn, order_id=here.order, status="out_for_delivery")
        await publish(api, topic, here.status("out_for_delivery", last, event="eta"))
        _, before = await customer.expect(lambda f: f.get("version") == last)
    assert [f["version"] for f in before if f["type"] == "status"] == [version]
    assert (
        bridge.metric("bridge_announcements_skipped_total", kind="status", reason="repeat")
        == repeats_before + 1
    )
    await here.close()


async def test_an_alert_reaches_each_admin_once_and_the_phones_emergency_topic_not_at_all(
    bridge: BridgeProcess, unique: str
) -> None:
    services = bridge.services
    courier = f"c{unique}"
    watching = await connected(bridge, "admin", f"ops{unique}")
    await watching.subscribe("fleet")
    idle = await connected(bridge, "admin", f"idle{unique}")  # subscribed to nothing
    repeats_before = bridge.metric(
        "bridge_announcements_skipped_total", kind="alert", reason="repeat"
    )
    alert_id, sentinel_id = next_event_id(), next_event_id()
    raised = alert_message(alert_id=alert_id, courier_id=courier, message=f"help {unique}")
    async with mqtt(services, "loadgen") as phone, mqtt(services, "api") as api:
        # The phone's own alarm: the API's input, never relayed by the bridge.
        await publish(phone, f"fleet/couriers/{courier}/emergency", {"message": "phone"})
        topic = f"fleet/alerts/{courier}"
        await publish(api, topic, raised)
        await publish(api, topic, raised)  # the same outbox row again
        await publish(api, topic, replace(raised, event_id=next_event_id()))  # the same alert
        acknowledged = alert_message(
            alert_id=alert_id,
            courier_id=courier,
            message=f"help {unique}",
            kind="alert_acknowledged",
        )
        await publish(api, topic, acknowledged)
        await publish(
            api, topic, alert_message(alert_id=sentinel_id, courier_id=courier, message="last")
        )
        for admin in (watching, idle):
            _, before = await admin.expect(lambda f: f.get("alert_id") == sentinel_id)
            emergencies = [f for f in before if f["type"] == "emergency"]
            assert [(f["alert_id"], f["state"]) for f in emergencies] == [
                (alert_id, "raised"),
                (alert_id, "acknowledged"),
            ], emergencies
            assert emergencies[0]["message"] == f"help {unique}"
            assert emergencies[1]["acknowledged_by"] == "ops"
    assert (
        bridge.metric("bridge_announcements_skipped_total", kind="alert", reason="repeat")
        == repeats_before + 2
    )
    for admin in (watching, idle):
        await admin.close()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe\x00garbage", "not_json"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "too_deep"),
        (b"[1, 2]", "bad_shape"),
        (b'{"type": "status"}', "missing_field"),
        ("extra", "unknown_field"),
        ("mismatch", "id_mismatch"),
        ("bad_courier", "bad_id"),
        ("naive_ts", "bad_field"),
    ],
)
async def test_bad_server_messages_are_counted_and_the_relay_goes_on(
    bridge: BridgeProcess, db: Db, unique: str, payload: bytes | str, reason: str
) -> None:
    services = bridge.services
    here = await scene(bridge, db, unique)
    customer, _ = here.sockets
    good = message_fields(here.status("out_for_delivery", here.version + 1))
    variants: dict[str, dict[str, Any]] = {
        "extra": {**good, "surprise": 1},
        "mismatch": {**good, "order_id": f"other{unique}"},
        "bad_courier": {**good, "courier_id": "c/#"},
        "naive_ts": {**good, "ts": "2026-01-01T00:00:00"},
    }
    body = payload if isinstance(payload, bytes) else json.dumps(variants[payload]).encode()
    invalid_before = bridge.metric("bridge_mqtt_invalid_total", reason=reason)
    topic = f"fleet/orders/{here.order}/status"
    async with mqtt(services, "api") as api:
        await publish(api, topic, body)
        version = await store_change(services.dsn, order_id=here.order, status="out_for_delivery")
        await publish(api, topic, here.status("out_for_delivery", version))
        _, before = await customer.expect(lambda f: f.get("version") == version)
    assert [f for f in before if f["type"] == "status"] == []
    assert bridge.metric("bridge_mqtt_invalid_total", reason=reason) == invalid_before + 1
    await here.close()


@contextlib.asynccontextmanager
async def hub_in_process(services: Services) -> AsyncIterator[Hub]:
    """The bridge's hub on the real database, driven message by message as its MQTT loop
    drives it, so a socket's queue can be held still."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(services.dsn, min_size=1, open=False)
    await pool.open()
    metrics = BridgeMetrics()
    topics = Topics("fleet")
    try:
        yield Hub(
            topics=topics,
            orders=OrderDirectory(pool),
            snapshots=Snapshots(pool),
            subscriptions=SubscriptionManager(topics=topics, metrics=metrics, linger_s=0.1),
            metrics=metrics,
            # No broker here: a subscribe does not wait for its filters.
            subscribe_timeout_s=0.0,
        )
    finally:
        await pool.close()


@pytest.mark.parametrize("status", ["delivered", "cancelled"])
async def test_a_position_queued_for_a_stalled_socket_is_dropped_when_the_order_ends(
    services: Services, db: Db, unique: str, status: str
) -> None:
    order, courier, customer_uid = f"o{unique}", f"c{unique}", f"u{unique}"
    seed_order(
        db,
        order_id=order,
        restaurant_id=f"r{unique}",
        customer_uid=customer_uid,
        courier_id=courier,
        status="out_for_delivery",
    )
    written: list[Frame] = []
    writable, drained = asyncio.Event(), asyncio.Event()
    client: Client | None = None

    async def send(frame: str) -> None:
        await writable.wait()
        written.append(json.loads(frame))
        if client is not None and not client.pending():
            drained.set()

    async with hub_in_process(services) as hub:
        client = Client(
            send=send,
            metrics=hub.metrics,
            principal=Principal(uid=customer_uid, role="customer"),
        )
        hub.connected(client)
        await hub.subscribe(client, f"order:{order}")
        location = f"fleet/couriers/{courier}/location"
        await hub.on_message(location, json.dumps(fix(1.0, 1.0)).encode(), 0.0)
        assert client.pending() == 3  # subscribed, snapshot, and the position
        version = await store_change(services.dsn, order_id=order, status=status)
        message = status_message(
            order_id=order,
            status=status,
            courier_id=courier,
            restaurant_id=f"r{unique}",
            customer_uid=customer_uid,
            version=version,
        )
        await hub.on_message(f"fleet/orders/{order}/status", message.encode(), 0.0)
        await hub.on_message(location, json.dumps(fix(2.0, 2.0)).encode(), 0.0)
        writable.set()
        sender = asyncio.create_task(client.run_sender())
        client.wake()
        await asyncio.wait_for(drained.wait(), 5)
        sender.cancel()
        hub.disconnected(client)
    assert [f["type"] for f in written] == ["subscribed", "snapshot", "status"], written
    assert written[2]["status"] == status


async def test_a_repeated_assignment_is_relayed_once(bridge: BridgeProcess, unique: str) -> None:
    services = bridge.services
    admin = await connected(bridge, "admin", f"ops{unique}")
    await admin.subscribe("fleet")
    repeats_before = bridge.metric(
        "bridge_announcements_skipped_total", kind="assignment", reason="repeat"
    )
    courier, order, last = f"c{unique}", f"o{unique}", f"p{unique}"
    topic = f"fleet/couriers/{courier}/assignments"
    assignment = assignment_message(courier_id=courier, order_id=order, version=2)
    async with mqtt(services, "api") as api:
        await publish(api, topic, assignment)
        await publish(api, topic, assignment)
        await publish(api, topic, assignment_message(courier_id=courier, order_id=last, version=2))
        _, before = await admin.expect(lambda f: f["type"] == "assignment" and f["order"] == last)
    assert [f["order"] for f in before if f["type"] == "assignment"] == [order]
    assert (
        bridge.metric("bridge_announcements_skipped_total", kind="assignment", reason="repeat")
        == repeats_before + 1
    )
    await admin.close()


def test_the_memory_of_relayed_announcements_is_bounded() -> None:
    announcements = Announcements(capacity=3)
    for event_id in range(5):
        announcements.relayed(event_id)
    assert [announcements.repeated(n) for n in range(5)] == [False, False, True, True, True]
    assert not announcements.repeated(None)
    announcements.status_relayed("o1", 4)
    announcements.status_relayed("o1", 3)  # an older one never lowers what is known
    assert announcements.status_version("o1") == 4
    with pytest.raises(ValueError, match="capacity"):
        Announcements(capacity=0)
