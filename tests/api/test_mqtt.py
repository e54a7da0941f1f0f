"""Assignments, status changes and alerts really appear on MQTT (a real subscriber)."""

from __future__ import annotations

import json
import queue
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.api.conftest import World
from tests.ingest_harness import Worker, running_worker, wait_until
from tests.services import Services


class Subscriber:
    def __init__(self, services: Services, topics: list[str]) -> None:
        self.messages: queue.Queue[tuple[str, int, dict[str, Any]]] = queue.Queue()
        self._subscribed = queue.Queue[int]()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = lambda _c, _u, msg: self.messages.put(
            (msg.topic, msg.qos, json.loads(msg.payload))
        )
        self.client.on_subscribe = lambda _c, _u, mid, _codes, _props: self._subscribed.put(mid)
        # The bridge's account reads every server topic, as the bridge does.
        bridge = services.credentials("bridge")
        self.client.username_pw_set(bridge.username, bridge.password)
        self.client.connect(services.mosquitto.host, services.mosquitto.port)
        self.client.loop_start()
        _, mid = self.client.subscribe([(t, 1) for t in topics])
        assert self._subscribed.get(timeout=10) == mid

    def take(self, count: int, timeout: float = 10) -> list[tuple[str, int, dict[str, Any]]]:
        got: list[tuple[str, int, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            got.append(self.messages.get(timeout=max(0.01, deadline - time.monotonic())))
        return got

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def ingest_worker(services: Services) -> Iterator[Worker]:
    """The real ingest worker: couriers' MQTT reports reach the API through its inbox.
    Module-scoped: a worker left running would store what later tests publish."""
    with running_worker(services, group=f"api-tests-{uuid.uuid4().hex[:6]}") as worker:
        yield worker


@pytest.fixture
def subscriber(services: Services, world: World, ingest_worker: Worker) -> Iterator[Subscriber]:
    sub = Subscriber(
        services,
        [
            f"fleet/couriers/{world.courier_id}/assignments",
            f"fleet/couriers/{world.other_courier_id}/assignments",
            "fleet/orders/+/status",
            f"fleet/alerts/{world.courier_id}",
        ],
    )
    yield sub
    sub.close()


def test_assignment_reassignment_and_status_on_mqtt(world: World, subscriber: Subscriber) -> None:
    order = world.new_order(assign=world.courier_id)
    oid = order["id"]
    got = sorted(subscriber.take(2), key=lambda m: m[0])
    assert got[0][0] == f"fleet/couriers/{world.courier_id}/assignments"
    assert got[0][1] == 1
    assert got[0][2]["type"] == "assignment"
    assert got[0][2]["order_id"] == oid
    assert got[0][2]["dropoff"] == {"lat": 52.52, "lon": 13.45}
    assert got[1][0] == f"fleet/orders/{oid}/status"
    assert got[1][2]["event"] == "assignment"
    assert got[1][2]["status"] == "assigned"
    assert got[1][2]["courier_id"] == world.courier_id

    response = world.admin.post(
        f"/orders/{oid}/assignment", json={"courier_id": world.other_courier_id}
    )
    assert response.status_code == 200
    got = subscriber.take(3)
    by_topic = {topic: payload for topic, _, payload in got}
    old = by_topic[f"fleet/couriers/{world.courier_id}/assignments"]
    assert old["type"] == "unassignment"
    assert old["order_id"] == oid
    new = by_topic[f"fleet/couriers/{world.other_courier_id}/assignments"]
    assert new["type"] == "assignment"
    status = by_topic[f"fleet/orders/{oid}/status"]
    assert status["courier_id"] == world.other_courier_id
    assert status["previous_courier_id"] == world.courier_id

    courier = world.api.client(world.api.token("courier", courier_id=world.other_courier_id))
    response = courier.post(f"/orders/{oid}/status", json={"status": "picked_up", "note": "ok"})
    assert response.status_code == 200
    ((topic, qos, payload),) = subscriber.take(1)
    assert topic == f"fleet/orders/{oid}/status"
    assert qos == 1
    assert payload["event"] == "status"
    assert payload["previous_status"] == "assigned"
    assert payload["status"] == "picked_up"
    assert payload["note"] == "ok"
    assert "eta" in payload

    # A refused change publishes nothing.
    assert courier.post(f"/orders/{oid}/status", json={"status": "assigned"}).status_code == 409
    response = world.admin.post(f"/orders/{oid}/status", json={"status": "cancelled"})
    assert response.status_code == 200
    last = {topic: payload for topic, _, payload in subscriber.take(2)}
    assert last[f"fleet/orders/{oid}/status"]["previous_status"] == "picked_up"
    assert last[f"fleet/couriers/{world.other_courier_id}/assignments"]["type"] == "unassignment"


def test_alert_is_published_and_acknowledged(world: World, subscriber: Subscriber) -> None:
    courier = world.as_role("courier")
    response = courier.post("/alerts", json={"lat": 52.5, "lon": 13.4, "message": "crash"})
    assert response.status_code == 201
    alert = response.json()
    ((topic, _, payload),) = subscriber.take(1)
    assert topic == f"fleet/alerts/{world.courier_id}"
    assert payload["type"] == "alert_raised"
    assert payload["alert_id"] == alert["id"]
    assert payload["message"] == "crash"
    open_ids = [a["id"] for a in world.admin.get("/alerts").json()["items"]]
    assert alert["id"] in open_ids

    response = world.admin.post(f"/alerts/{alert['id']}/acknowledge")
    assert response.status_code == 200
    acknowledged = response.json()
    assert acknowledged["acknowledged_by"].startswith("admin-")
    assert acknowledged["acknowledged_at"] is not None
    ((_, _, payload),) = subscriber.take(1)
    assert payload["type"] == "alert_acknowledged"
    assert alert["id"] not in [a["id"] for a in world.admin.get("/alerts").json()["items"]]
    assert world.admin.post(f"/alerts/{alert['id']}/acknowledge").status_code == 409


def test_mqtt_emergency_becomes_an_alert(
    world: World, subscriber: Subscriber, services: Services
) -> None:
    """A phone's emergency over MQTT (published with mosquitto_pub and the phone's own
    credentials) goes through ingest's inbox, is stored as an open alert and announced for
    admins once."""
    device = services.provision_device("courier", world.courier_id)
    payload = json.dumps(
        {"ts": time.time(), "lat": 52.51, "lon": 13.41, "message": "help over mqtt"}
    )
    command = [
        "mosquitto_pub", "-h", services.mosquitto.host, "-p", str(services.mosquitto.port),
        "-u", device.username, "-P", device.password, "-i", device.client_id,
        "-V", "mqttv5", "-q", "1",
        "-t", f"fleet/couriers/{world.courier_id}/emergency", "-m", payload,
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=20)
    ((topic, _, message),) = subscriber.take(1)
    assert topic == f"fleet/alerts/{world.courier_id}"
    assert message["type"] == "alert_raised"
    assert message["message"] == "help over mqtt"
    alerts = [
        a for a in world.admin.get("/alerts").json()["items"] if a["id"] == message["alert_id"]
    ]
    assert len(alerts) == 1
    assert alerts[0]["courier_id"] == world.courier_id
    assert alerts[0]["acknowledged_at"] is None
    assert isinstance(message["event_id"], int)
    # The same message again (an MQTT redelivery) stores nothing new and announces nothing.
    subprocess.run(command, check=True, timeout=20)
    with pytest.raises(queue.Empty):
        subscriber.take(1, timeout=2)
    raised = [
        a for a in world.admin.get("/alerts").json()["items"] if a["courier_id"] == world.courier_id
    ]
    assert len(raised) == 1


def test_phone_status_reports_drive_the_workflow(
    world: World, subscriber: Subscriber, services: Services
) -> None:
    """A courier's phone reports progress over MQTT (mosquitto_pub with its own credentials):
    valid steps are applied and published, an invalid one is stored as rejected, a repeat
    changes nothing."""
    order = world.new_order(assign=world.courier_id)
    subscriber.take(2)  # the assignment to the courier and its order event
    device = services.provision_device("courier", world.courier_id)

    def report(status: str, ts: float) -> None:
        payload = json.dumps({"status": status, "ts": ts})
        command = [
            "mosquitto_pub", "-h", services.mosquitto.host, "-p", str(services.mosquitto.port),
            "-u", device.username, "-P", device.password, "-i", device.client_id,
            "-V", "mqttv5", "-q", "1",
            "-t", f"fleet/couriers/{world.courier_id}/deliveries/{order['id']}/status",
            "-m", payload,
        ]  # fmt: skip
        subprocess.run(command, check=True, timeout=20)

    def status_now() -> str:
        response = world.admin.get(f"/orders/{order['id']}")
        assert response.status_code == 200
        return str(response.json()["status"])

    now = time.time()
    report("picked_up", now)
    ((topic, qos, message),) = subscriber.take(1)
    assert topic == f"fleet/orders/{order['id']}/status"
    assert qos == 1
    assert (message["status"], message["previous_status"]) == ("picked_up", "assigned")
    assert status_now() == "picked_up"

    report("picked_up", now)  # a repeat (or redelivery): nothing changes, nothing published
    report("delivered", now + 1)  # skips out_for_delivery: refused
    with pytest.raises(queue.Empty):
        subscriber.take(1, timeout=3)
    assert status_now() == "picked_up"

    def rejected_reports() -> list[dict[str, Any]]:
        events = world.admin.get(f"/orders/{order['id']}/events").json()["items"]
        return [e for e in events if e["kind"] == "status_rejected"]

    # A skipping report waits (report_reorder_window_s) for the one it may have overtaken.
    wait_until(lambda: bool(rejected_reports()), timeout=30, what="the refused report")
    rejected = rejected_reports()
    assert len(rejected) == 1
    assert rejected[0]["payload"]["to"] == "delivered"
    assert "out_for_delivery" in rejected[0]["payload"]["allowed"]

    report("out_for_delivery", now + 2)
    report("delivered", now + 3)
    statuses = [m["status"] for _, _, m in subscriber.take(2)]
    assert statuses == ["out_for_delivery", "delivered"]
    assert status_now() == "delivered"
