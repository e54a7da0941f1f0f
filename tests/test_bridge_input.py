"""Whatever a browser sends, before or after `auth`, it gets an error frame with a code and
the socket stays usable (a real bridge process)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.bridge_support import BridgeProcess, WsClient, running_bridge
from tests.services import Services

HOSTILE: list[tuple[str | bytes, str]] = [
    ("[" * 1_000 + "]" * 1_000, "too_deep"),
    ('{"type":"ping","id":' + "[" * 10 + "1" + "]" * 10 + "}", "too_deep"),
    ('{"type": "subscribe", "channel": ' + '{"a":' * 1_500 + "1" + "}" * 1_500 + "}", "too_deep"),
    ("[" * 100_000, "too_large"),
    ('{"type": "subscribe", "channel": "a\\u0000b"}', "bad_channel"),
    (json.dumps({"type": "subscribe", "channel": "x" * 15_000}), "bad_channel"),
    ('{"type": "subscribe", "channel": 1e400}', "bad_json"),
    ('{"type": 1e400}', "bad_json"),
    ('{"type": "subscribe", "channel": ["order:o-1"]}', "bad_channel"),
    ("not json", "bad_json"),
    ('"just a string"', "bad_frame"),
    (b"\xff\xfe binary", "binary_frame"),
]


@pytest.fixture(scope="module")
def bridge(services: Services) -> Iterator[BridgeProcess]:
    with running_bridge(services) as running:
        yield running


async def hostile_frames_are_answered(client: WsClient, *, authenticated: bool) -> None:
    for frame, code in HOSTILE:
        if not authenticated and code == "bad_channel":
            continue  # before auth, a well-formed non-auth frame ends the socket (4401)
        await client.connection.send(frame)
        error = await client.expect_type("error", within=10)
        assert error["code"] == code, (frame[:60], error)
    await client.send({"type": "ping", "id": 1})
    assert (await client.expect_type("pong"))["id"] == 1


def test_hostile_frames_before_and_after_auth(bridge: BridgeProcess, unique: str) -> None:
    async def scenario() -> None:
        client = await WsClient.open(bridge.url)
        # Before auth only malformed frames: each answered, the socket still open.
        for frame, code in HOSTILE:
            if code == "bad_channel":
                continue
            await client.connection.send(frame)
            error = await client.expect_type("error", within=10)
            assert error["code"] == code, (frame[:60], error)
        ok = await client.auth(bridge.token("admin", f"u{unique}"))
        assert ok["type"] == "auth_ok", ok
        await hostile_frames_are_answered(client, authenticated=True)
        # A token that cannot be read at all.
        await client.send({"type": "auth", "token": "\u0000" * 1000})
        error = await client.expect_type("error")
        assert error["code"] == "auth_failed"
        await client.send({"type": "ping", "id": 2})
        assert (await client.expect_type("pong"))["id"] == 2
        await client.close()

    asyncio.run(scenario())
    assert bridge.metric("bridge_client_errors_total", code="too_deep") >= 4
