"""Device credentials through the broker package: created once with the password shown once,
usable on the real broker, rotated and revoked; per role."""

from __future__ import annotations

import json
import queue
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.api.conftest import World
from tests.services import Services


def connect_device(
    services: Services, credentials: dict[str, Any]
) -> tuple[mqtt.Client | None, queue.Queue[dict[str, Any]]]:
    """Connect as the device and subscribe to its assignments; None if refused."""
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()
    outcome: queue.Queue[bool] = queue.Queue()
    subscribed: queue.Queue[int] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=credentials["client_id"], protocol=mqtt.MQTTv5
    )
    client.username_pw_set(credentials["username"], credentials["password"])

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        outcome.put(not reason.is_failure)

    client.on_connect = on_connect
    client.on_message = lambda _c, _u, msg: inbox.put(json.loads(msg.payload))
    client.on_subscribe = lambda _c, _u, mid, _codes, _p: subscribed.put(mid)
    client.connect(services.mosquitto.host, services.mosquitto.port)
    client.loop_start()
    if not outcome.get(timeout=10):
        client.loop_stop()
        return None, inbox
    _, mid = client.subscribe(credentials["subscribe_topics"][0], qos=1)
    assert subscribed.get(timeout=10) == mid
    return client, inbox


def test_device_lifecycle(world: World, services: Services) -> None:
    cid = world.courier_id
    response = world.admin.post("/devices", json={"owner_kind": "courier", "owner_id": cid})
    assert response.status_code == 201, response.text
    credentials = response.json()
    assert credentials["username"] == f"courier.{cid}"
    assert len(credentials["password"]) >= 20
    assert credentials["subscribe_topics"] == [f"fleet/couriers/{cid}/assignments"]
    # Shown once: listing never includes it.
    listed = world.admin.get("/devices").json()["items"]
    mine = [d for d in listed if d["username"] == credentials["username"]]
    assert len(mine) == 1
    assert "password" not in mine[0]
    # Again: 409, rotate instead.
    again = world.admin.post("/devices", json={"owner_kind": "courier", "owner_id": cid})
    assert again.status_code == 409

    # The phone connects with them and receives its assignment.
    phone, inbox = connect_device(services, credentials)
    assert phone is not None
    try:
        order = world.new_order(assign=cid)
        message = inbox.get(timeout=10)
        assert message["type"] == "assignment"
        assert message["order_id"] == order["id"]
    finally:
        phone.loop_stop()
        phone.disconnect()

    # The courier rotates their own phone's password: the old one stops working.
    courier = world.as_role("courier")
    rotated = courier.post(f"/devices/courier/{cid}/rotate")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["password"] != credentials["password"]
    refused, _ = connect_device(services, credentials)
    assert refused is None
    phone, _ = connect_device(services, rotated.json())
    assert phone is not None
    phone.loop_stop()
    phone.disconnect()
    assert [d["username"] for d in courier.get("/devices").json()["items"]] == [f"courier.{cid}"]

    # Revoked: it can no longer connect; revoking again changes nothing.
    revoked = courier.delete(f"/devices/courier/{cid}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    refused, _ = connect_device(services, rotated.json())
    assert refused is None
    assert world.admin.delete(f"/devices/courier/{cid}").status_code == 200
    assert world.admin.post(f"/devices/courier/{cid}/rotate").status_code == 404
    # The courier provisions their phone again themself.
    renewed = courier.post("/devices", json={"owner_kind": "courier", "owner_id": cid})
    assert renewed.status_code == 201


def test_device_routes_per_role(world: World) -> None:
    cid, other = world.courier_id, world.other_courier_id
    api = world.api
    clients = {
        "anonymous": api.client(),
        "customer": world.as_role("customer"),
        "restaurant": world.as_role("restaurant"),
        "courier": world.as_role("courier"),
    }
    body = {"owner_kind": "courier", "owner_id": other}
    calls = [
        ("POST", "/devices", body),
        ("GET", "/devices", None),
        ("POST", f"/devices/courier/{other}/rotate", None),
        ("DELETE", f"/devices/courier/{other}", None),
    ]
    expected = {
        "anonymous": [401, 401, 401, 401],
        "customer": [403, 403, 403, 403],
        "restaurant": [403, 403, 403, 403],
        # Another courier's phone: forbidden; their own list is fine (and empty).
        "courier": [403, 200, 403, 403],
    }
    for role, client in clients.items():
        got = [client.request(m, p, json=b).status_code for m, p, b in calls]
        assert got == expected[role], role
    assert clients["courier"].get("/devices").json()["items"] == []
    vehicle = world.admin.post("/vehicles", json={"id": f"v-{cid}", "label": "Van"})
    assert vehicle.status_code == 201
    assert (
        world.admin.post(
            "/devices", json={"owner_kind": "vehicle", "owner_id": f"v-{cid}"}
        ).status_code
        == 201
    )
    assert (
        clients["courier"]
        .post("/devices", json={"owner_kind": "vehicle", "owner_id": f"v-{cid}"})
        .status_code
        == 403
    )
    assert (
        world.admin.post(
            "/devices", json={"owner_kind": "courier", "owner_id": "nobody"}
        ).status_code
        == 404
    )
