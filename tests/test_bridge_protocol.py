"""The browser protocol: authentication, re-authentication, and malformed frames."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from auth import LocalSigner
from config import load_settings
from tests.bridge_support import (
    BridgeProcess,
    WsClient,
    apublish,
    connected,
    fix,
    running_bridge,
    stream_until_seen,
)
from tests.services import Services

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def bridge(services: Services) -> Iterator[BridgeProcess]:
    # Short auth deadlines so the tests do not wait the production 10 s and 30 s.
    with running_bridge(
        services, bridge_auth_timeout_s="1.5", bridge_reauth_grace_s="1.5"
    ) as running:
        yield running


def test_production_deadlines_are_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.bridge_auth_timeout_s == 10
    assert settings.bridge_reauth_grace_s == 30
    assert settings.bridge_max_frame_bytes == 16 * 1024
    assert settings.bridge_max_frames_per_s == 50


async def refused(bridge: BridgeProcess, token: str) -> tuple[dict[str, object], int | None]:
    client = await WsClient.open(bridge.url)
    await client.send({"type": "auth", "token": token})
    error = await client.expect_type("error")
    return error, await client.closed_with()


async def test_missing_auth_closes_with_4401(bridge: BridgeProcess) -> None:
    silent = await WsClient.open(bridge.url)
    started = time.monotonic()
    assert await silent.closed_with() == 4401
    assert 1.0 < time.monotonic() - started < 5
    assert silent.frames[-1]["code"] == "auth_timeout"

    eager = await WsClient.open(bridge.url)
    await eager.send({"type": "subscribe", "channel": "fleet"})
    assert (await eager.expect_type("error"))["code"] == "auth_required"
    assert await eager.closed_with() == 4401

    empty = await WsClient.open(bridge.url)
    await empty.send({"type": "auth"})
    assert (await empty.expect_type("error"))["reason"] == "missing_token"
    assert await empty.closed_with() == 4401


async def test_expired_forged_and_foreign_tokens_are_refused(bridge: BridgeProcess) -> None:
    expired = bridge.signer.issue(uid="ops", role="admin", ttl_s=5, now=time.time() - 60)
    error, code = await refused(bridge, expired)
    assert (error["code"], error["reason"], code) == ("auth_failed", "token_expired", 4401)

    header, payload, signature = bridge.token("customer", "eve").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    error, code = await refused(bridge, f"{header}.{forged}.{signature}")
    assert (error["reason"], code) == ("invalid_token", 4401)

    stranger = LocalSigner(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    error, code = await refused(bridge, stranger.issue(uid="ops", role="admin"))
    assert (error["reason"], code) == ("invalid_token", 4401)

    error, code = await refused(bridge, bridge.token("courier", "bob"))  # no courier_id
    assert (error["reason"], code) == ("missing_claims", 4401)
    assert bridge.metric("bridge_closed_total", reason="auth_failed") >= 4


async def test_expiring_token_asks_for_reauth_and_closes_without_it(
    bridge: BridgeProcess,
) -> None:
    short = bridge.signer.issue(uid="ops", role="admin", ttl_s=1.5)
    renewing = await WsClient.open(bridge.url)
    assert (await renewing.auth(short))["type"] == "auth_ok"
    lapsing = await WsClient.open(bridge.url)
    assert (await lapsing.auth(short))["type"] == "auth_ok"

    await renewing.expect_type("reauth_required", within=4)
    await renewing.send({"type": "auth", "token": bridge.token("admin", "ops")})
    assert (await renewing.expect_type("auth_ok"))["uid"] == "ops"
    # A fresh token for someone else does not take over the socket.
    await renewing.send({"type": "auth", "token": bridge.token("admin", "mallory")})
    assert (await renewing.expect_type("error"))["code"] == "identity_changed"

    await lapsing.expect_type("reauth_required", within=4)
    assert await lapsing.closed_with(within=5) == 4401
    assert lapsing.frames[-1]["code"] == "auth_expired"

    # The renewed socket outlives the lapsed one's grace period and still works.
    await asyncio.sleep(0.5)
    await renewing.send({"type": "ping", "id": 7})
    assert (await renewing.expect_type("pong"))["id"] == 7
    await renewing.close()


@pytest.fixture(scope="module")
def patient_bridge(services: Services) -> Iterator[BridgeProcess]:
    # The production grace, so the test's steps inside it never race its end.
    with running_bridge(services, bridge_reauth_grace_s="30") as running:
        yield running


DATA_FRAMES = frozenset({"location", "locations", "status", "assignment", "presence", "alert"})


async def test_an_expired_token_gets_only_control_frames_until_a_fresh_auth(
    patient_bridge: BridgeProcess, unique: str
) -> None:
    bridge, services = patient_bridge, patient_bridge.services
    courier = f"c{unique}"
    topic = f"fleet/couriers/{courier}/location"
    admin = await WsClient.open(bridge.url)
    ok = await admin.auth(bridge.signer.issue(uid="ops", role="admin", ttl_s=3))
    assert ok["type"] == "auth_ok"
    await admin.subscribe(f"courier:{courier}")
    await stream_until_seen(admin, services, courier, lat=1.0)

    await admin.expect_type("reauth_required", within=10)
    expired_at = len(admin.frames)
    dropped_before = bridge.metric("bridge_dropped_total", reason="reauth_pending")
    # Fixes keep arriving at the bridge during the grace; none of them reaches the socket.
    for lat in (2.0, 3.0, 4.0):
        await apublish(services, topic, fix(lat))
    deadline = time.monotonic() + 20
    while bridge.metric("bridge_dropped_total", reason="reauth_pending") < dropped_before + 3:
        assert time.monotonic() < deadline, "the bridge never saw the fixes sent in the grace"
        await asyncio.sleep(0.05)

    await admin.send({"type": "auth", "token": bridge.token("admin", "ops")})
    await admin.expect_type("auth_ok")
    snapshot = await admin.expect_type("snapshot")
    during_grace = admin.frames[expired_at:]
    assert not [f for f in during_grace if f["type"] in DATA_FRAMES], during_grace
    # The fresh auth brings the channel's state as it is now, then the live data again.
    assert snapshot["channel"] == f"courier:{courier}"
    assert [(p["id"], p["lat"]) for p in snapshot["locations"]] == [(courier, 4.0)]
    await stream_until_seen(admin, services, courier, lat=5.0)
    await admin.close()


async def test_malformed_frames_are_answered_and_the_socket_stays_usable(
    bridge: BridgeProcess, unique: str
) -> None:
    services = bridge.services
    courier = f"c{unique}"
    bystander = await connected(bridge, "admin", "bystander")
    await bystander.subscribe(f"courier:{courier}")
    client = await connected(bridge, "admin", "clumsy")

    cases: list[tuple[str | bytes, str]] = [
        ("this is not json", "bad_json"),
        ('["a", "list"]', "bad_frame"),
        (json.dumps({"type": "teleport"}), "unknown_type"),
        (json.dumps({"type": "ping", "pad": "x" * 17_000}), "too_large"),
        (b"\x00\x01binary", "binary_frame"),
        (json.dumps({"type": "subscribe", "channel": "order:../../etc"}), "bad_channel"),
    ]
    for frame, code in cases:
        await client.connection.send(frame)
        error = await client.expect_type("error")
        assert error["code"] == code, (frame, error)
        await client.send({"type": "ping", "id": code})
        assert (await client.expect_type("pong"))["id"] == code

    # A flood: more than 50 frames within one second gets one error, then is ignored.
    await asyncio.sleep(1.1)
    for n in range(80):
        await client.send({"type": "ping", "id": n})
    flood = await client.drain(0.5)
    assert [f["code"] for f in flood if f["type"] == "error"] == ["rate_limited"]
    assert 45 <= len([f for f in flood if f["type"] == "pong"]) <= 50
    await asyncio.sleep(1.1)
    await client.send({"type": "ping", "id": "after"})
    assert (await client.expect_type("pong"))["id"] == "after"

    # The other client was served throughout.
    await apublish(services, f"fleet/couriers/{courier}/location", fix(9.0, 9.0))
    location, _ = await bystander.expect(lambda f: f["type"] == "location")
    assert location["lat"] == 9.0
    for code in ("bad_json", "unknown_type", "too_large", "rate_limited"):
        assert bridge.metric("bridge_client_errors_total", code=code) >= 1
    await client.close()
    await bystander.close()
