"""A real bridge process, a real WebSocket client and real MQTT publishing, for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec
import psycopg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from auth import LocalSigner
from protocol.server_topics import AlertMessage, AssignmentMessage, OrderStatusMessage, Stop
from protocol.statuses import TERMINAL, Status
from stack.process import free_port
from store import orders as store
from tests.services import Services

PROJECT_ROOT = Path(__file__).resolve().parent.parent
Frame = dict[str, Any]


@dataclass
class BridgeProcess:
    services: Services
    port: int
    process: subprocess.Popen[bytes]
    signer: LocalSigner
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def token(self, role: str, uid: str, **claims: Any) -> str:
        return self.signer.issue(uid=uid, role=role, **claims)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        wanted = name
        if labels:
            inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            wanted = f"{name}{{{inner}}}"
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == wanted or (not labels and key.split("{")[0] == name):
                total += float(value)
        return total


@contextlib.contextmanager
def running_bridge(
    services: Services, *, extra_env: dict[str, str] | None = None, **settings: str
) -> Iterator[BridgeProcess]:
    port = free_port()
    env = {
        **os.environ,
        **services.environment("bridge"),
        "FLEETPULSE_BRIDGE_PORT": str(port),
        "FLEETPULSE_AUTH_MODE": "local",
        **{f"FLEETPULSE_{k.upper()}": v for k, v in settings.items()},
    }
    env.pop("FIREBASE_AUTH_EMULATOR_HOST", None)
    env.update(extra_env or {})
    log_path = services.root / f"bridge-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    bridge = BridgeProcess(
        services, port, process, LocalSigner.from_data_dir(services.root), log_path
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the bridge exited: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bridge did not become ready: {log_path.read_text()}")
            time.sleep(0.1)
        yield bridge
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # Shown by pytest when a test of this bridge failed.
        print(f"--- bridge log ---\n{log_path.read_text(errors='replace')[-20000:]}")


@dataclass
class WsClient:
    connection: ClientConnection
    frames: list[Frame] = field(default_factory=list)

    @classmethod
    async def open(cls, url: str, *, small_receive_buffer: bool = False) -> WsClient:
        sock = None
        if small_receive_buffer:
            # A browser that stopped reading: let its kernel buffer fill quickly.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            host, port = url.split("//")[1].split("/")[0].split(":")
            sock.connect((host, int(port)))
            sock.setblocking(False)
        connection = await connect(url, sock=sock, max_size=None, compression=None)
        return cls(connection)

    async def send(self, frame: Frame | str) -> None:
        await self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, within: float = 5.0) -> Frame:
        raw = await asyncio.wait_for(self.connection.recv(), within)
        frame: Frame = json.loads(raw)
        frame["_received"] = time.time()
        self.frames.append(frame)
        return frame

    async def expect(
        self, predicate: Callable[[Frame], bool], *, within: float = 5.0
    ) -> tuple[Frame, list[Frame]]:
        """Read until a frame matches; return it and the frames read before it."""
        skipped: list[Frame] = []
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame within {within} s; got {skipped}")
            frame = await self.recv(remaining)
            if predicate(frame):
                return frame, skipped
            skipped.append(frame)

    async def expect_type(self, kind: str, *, within: float = 5.0) -> Frame:
        frame, _ = await self.expect(lambda f: f["type"] == kind, within=within)
        return frame

    async def drain(self, duration: float) -> list[Frame]:
        """Every frame arriving within `duration` seconds."""
        got: list[Frame] = []
        deadline = time.monotonic() + duration
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.recv(remaining))
            except TimeoutError:
                break
        return got

    async def auth(self, token: str) -> Frame:
        await self.send({"type": "auth", "token": token})
        return await self.recv()

    async def subscribe(self, channel: str) -> tuple[Frame, Frame]:
        """Subscribe; return (confirmation, snapshot). Raises if refused."""
        await self.send({"type": "subscribe", "channel": channel})
        confirmation = await self.expect_type("subscribed")
        if confirmation.get("channel") != channel:
            raise AssertionError(f"confirmed {confirmation} for {channel}")
        snapshot = await self.expect_type("snapshot")
        return confirmation, snapshot

    async def closed_with(self, *, within: float = 10.0) -> int | None:
        """Read until the server closes; the close code (None: closed without a code)."""
        async with asyncio.timeout(within):
            while True:
                try:
                    await self.recv(within)
                except ConnectionClosed as exc:
                    return exc.rcvd.code if exc.rcvd else None

    async def close(self) -> None:
        await self.connection.close()

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a stalled browser's tab)."""
        self.connection.transport.abort()


async def connected(bridge: BridgeProcess, role: str, uid: str, **claims: Any) -> WsClient:
    client = await WsClient.open(bridge.url)
    ok = await client.auth(bridge.token(role, uid, **claims))
    assert ok["type"] == "auth_ok", ok
    return client


# --- MQTT, through the real command-line client -----------------------------------------
def publishing_account(topic: str) -> Literal["api", "loadgen"]:
    """Server topics are the API's to publish; device topics go out as the load generator."""
    server = "/orders/" in topic or topic.endswith("/assignments") or "/alerts/" in topic
    return "api" if server else "loadgen"


ServerMessage = OrderStatusMessage | AssignmentMessage | AlertMessage


def payload_bytes(payload: Any) -> bytes:
    """A server message as the API publishes it, raw bytes as they are, else JSON."""
    if isinstance(payload, OrderStatusMessage | AssignmentMessage | AlertMessage):
        return payload.encode()
    if isinstance(payload, bytes):
        return payload
    return payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()


def mqtt_publish(services: Services, topic: str, payload: Any, *, qos: int = 1) -> None:
    body = payload_bytes(payload)
    subprocess.run(
        [
            "mosquitto_pub",
            *services.mqtt_args(publishing_account(topic)),
            "-q",
            str(qos),
            "-t",
            topic,
            "-m",
            body.decode(),
        ],
        check=True,
        timeout=10,
    )


async def apublish(services: Services, topic: str, payload: Any, *, qos: int = 1) -> None:
    await asyncio.to_thread(mqtt_publish, services, topic, payload, qos=qos)


async def stream_until_seen(
    client: WsClient,
    services: Services,
    courier_id: str,
    *,
    lat: float,
    lon: float = 0.0,
    within: float = 5.0,
) -> tuple[Frame, list[Frame]]:
    """Publish a courier's fix every 0.2 s, as a phone does, until the client receives it
    (a subscription made on an assignment takes a broker round trip to become live).
    Returns that frame and every other frame received meanwhile."""
    topic = f"fleet/couriers/{courier_id}/location"
    start = len(client.frames)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await apublish(services, topic, fix(lat, lon))
        try:
            frame, _ = await client.expect(
                lambda f: f["type"] == "location" and f["id"] == courier_id and f["lat"] == lat,
                within=0.2,
            )
        except TimeoutError:
            continue
        return frame, [f for f in client.frames[start:] if f is not frame]
    raise TimeoutError(f"no fix of {courier_id} reached the client within {within} s")


def fix(lat: float = 52.5, lon: float = 13.4, **extra: Any) -> dict[str, Any]:
    return {"lat": lat, "lon": lon, "ts": time.time(), **extra}


# --- the database, as the API would leave it --------------------------------------------
def seed_order(
    db: psycopg.Connection[Any],
    *,
    order_id: str,
    restaurant_id: str,
    customer_uid: str,
    courier_id: str | None = None,
    status: str = "pending",
) -> None:
    db.execute(
        "INSERT INTO restaurants (id, name, lat, lon) VALUES (%s, %s, 52.5, 13.4) "
        "ON CONFLICT DO NOTHING",
        (restaurant_id, restaurant_id),
    )
    if courier_id is not None:
        seed_courier(db, courier_id)
    db.execute(
        "INSERT INTO orders (id, restaurant_id, customer_uid, pickup_lat, pickup_lon, "
        "dropoff_lat, dropoff_lon, promised_at, status, courier_id) "
        "VALUES (%s, %s, %s, 52.5, 13.4, 52.51, 13.41, %s, %s, %s)",
        (
            order_id,
            restaurant_id,
            customer_uid,
            datetime.now(UTC) + timedelta(minutes=30),
            status,
            courier_id,
        ),
    )


def seed_courier(db: psycopg.Connection[Any], courier_id: str) -> None:
    db.execute(
        "INSERT INTO couriers (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (courier_id, courier_id),
    )


_event_ids = itertools.count(time.time_ns() // 1000)


def next_event_id() -> int:
    """A fresh outbox row id, as the API's relay sets `event_id`."""
    return next(_event_ids)


def status_message(
    *,
    order_id: str,
    status: str,
    courier_id: str | None,
    restaurant_id: str,
    customer_uid: str,
    version: int,
    ts: datetime | None = None,
    event: Literal["status", "assignment", "eta"] = "status",
    previous_courier_id: str | None = None,
    eta: datetime | None = None,
    event_id: int | None = None,
) -> OrderStatusMessage:
    """An order status announcement as the API's outbox relay publishes it."""
    return OrderStatusMessage(
        event_id=next_event_id() if event_id is None else event_id,
        event=event,
        order_id=order_id,
        status=Status(status),
        previous_status=None,
        courier_id=courier_id,
        previous_courier_id=previous_courier_id,
        restaurant_id=restaurant_id,
        customer_uid=customer_uid,
        eta=eta,
        ts=ts or datetime.now(UTC),
        actor="test",
        version=version,
    )


def message_fields(message: ServerMessage) -> dict[str, Any]:
    """A message's JSON object, for a test to break it."""
    fields: dict[str, Any] = msgspec.json.decode(message.encode())
    return fields


async def store_change(
    dsn: str, *, order_id: str, status: str, courier_id: str | None = None
) -> int:
    """Commit a change of the order with the API's own queries (store.orders): a new courier
    when `courier_id` differs from the order's, and the status; one version bump. The ETA
    stays as it is. The order's new version."""
    target, now = Status(status), datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        order = await store.load_order(conn, order_id, for_update=True)
        assert order is not None, f"no order {order_id}"
        new_courier = courier_id is not None and courier_id != order.courier_id
        if courier_id is not None and new_courier:
            order = await store.set_courier(
                conn,
                order_id,
                courier_id=courier_id,
                status=order.status if target in TERMINAL else target,
                eta=order.eta,
                at=now,
            )
        if not new_courier or target in TERMINAL:
            order = await store.set_status(conn, order_id, status=target, eta=order.eta, at=now)
        return order.version


async def set_order_status(
    db: psycopg.Connection[Any],
    services: Services,
    *,
    order_id: str,
    status: str,
    courier_id: str | None,
    restaurant_id: str,
    customer_uid: str,
    previous_courier_id: str | None = None,
    eta: datetime | None = None,
    ts: datetime | None = None,
) -> int:
    """Commit a change as the API does (bumping the order's version), then publish its
    status announcement; the order's new version."""
    if courier_id is not None:
        seed_courier(db, courier_id)
    now = datetime.now(UTC)
    version = await store_change(
        services.dsn, order_id=order_id, status=status, courier_id=courier_id
    )
    await apublish(
        services,
        f"fleet/orders/{order_id}/status",
        status_message(
            order_id=order_id,
            status=status,
            courier_id=courier_id,
            restaurant_id=restaurant_id,
            customer_uid=customer_uid,
            version=version,
            ts=ts or now,
            previous_courier_id=previous_courier_id,
            eta=eta,
        ),
    )
    return version


def assignment_message(
    *,
    courier_id: str,
    order_id: str,
    version: int,
    kind: Literal["assignment", "unassignment"] = "assignment",
    event_id: int | None = None,
) -> AssignmentMessage:
    return AssignmentMessage(
        event_id=next_event_id() if event_id is None else event_id,
        type=kind,
        order_id=order_id,
        courier_id=courier_id,
        restaurant_id="r",
        pickup=Stop(lat=52.5, lon=13.4),
        dropoff=Stop(lat=52.51, lon=13.41),
        promised_at=datetime.now(UTC),
        ts=datetime.now(UTC),
        version=version,
    )


async def publish_assignment(
    services: Services,
    *,
    courier_id: str,
    order_id: str,
    version: int,
    kind: Literal["assignment", "unassignment"] = "assignment",
) -> None:
    await apublish(
        services,
        f"fleet/couriers/{courier_id}/assignments",
        assignment_message(courier_id=courier_id, order_id=order_id, version=version, kind=kind),
    )


def alert_message(
    *,
    alert_id: int,
    courier_id: str,
    message: str,
    kind: Literal["alert_raised", "alert_acknowledged"] = "alert_raised",
    lat: float | None = 52.5,
    lon: float | None = 13.4,
    event_id: int | None = None,
) -> AlertMessage:
    """An alert announcement as the API's outbox relay publishes it."""
    acknowledged = kind == "alert_acknowledged"
    return AlertMessage(
        event_id=next_event_id() if event_id is None else event_id,
        type=kind,
        alert_id=alert_id,
        courier_id=courier_id,
        raised_at=datetime.now(UTC),
        lat=lat,
        lon=lon,
        message=message,
        acknowledged_by="ops" if acknowledged else None,
        acknowledged_at=datetime.now(UTC) if acknowledged else None,
    )


async def publish_alert(
    services: Services,
    *,
    alert_id: int,
    courier_id: str,
    message: str,
    kind: Literal["alert_raised", "alert_acknowledged"] = "alert_raised",
    event_id: int | None = None,
) -> None:
    await apublish(
        services,
        f"fleet/alerts/{courier_id}",
        alert_message(
            alert_id=alert_id, courier_id=courier_id, message=message, kind=kind, event_id=event_id
        ),
    )
