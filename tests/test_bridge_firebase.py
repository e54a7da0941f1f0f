"""End to end through the real Firebase Auth emulator: a user with custom claims signs in,
and the bridge (in firebase mode) accepts that ID token with the role from the claims."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.bridge_support import PROJECT_ROOT, WsClient, running_bridge
from tests.firebase_emulator import PROJECT_ID, AuthEmulator, running_auth_emulator
from tests.firebase_emulator import unavailable_reason as emulator_unavailable
from tests.services import Services

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(emulator_unavailable() is not None, reason=str(emulator_unavailable())),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def emulator() -> Iterator[AuthEmulator]:
    with running_auth_emulator() as running:
        yield running


async def test_emulator_id_token_works_on_the_bridge(
    emulator: AuthEmulator, services: Services, unique: str
) -> None:
    courier_uid = emulator.create_user(f"rider{unique}@example.com", "secret-pass")
    emulator.set_custom_claims(courier_uid, {"role": "courier", "courier_id": f"c{unique}"})
    courier_token = emulator.sign_in(f"rider{unique}@example.com", "secret-pass")
    emulator.create_user(f"nobody{unique}@example.com", "secret-pass")
    claimless_token = emulator.sign_in(f"nobody{unique}@example.com", "secret-pass")

    firebase_env = {"FIREBASE_AUTH_EMULATOR_HOST": emulator.host}
    with running_bridge(
        services, extra_env=firebase_env, auth_mode="firebase", firebase_project_id=PROJECT_ID
    ) as bridge:
        rider = await WsClient.open(bridge.url)
        ok = await rider.auth(courier_token)
        assert ok["type"] == "auth_ok", ok
        assert (ok["uid"], ok["role"], ok["courier_id"]) == (courier_uid, "courier", f"c{unique}")
        await rider.subscribe(f"courier:c{unique}")
        await rider.send({"type": "subscribe", "channel": "fleet"})
        assert (await rider.expect_type("error"))["code"] == "forbidden"
        await rider.close()

        # Signed in, but without a role in its custom claims: refused.
        nobody = await WsClient.open(bridge.url)
        await nobody.send({"type": "auth", "token": claimless_token})
        error = await nobody.expect_type("error")
        assert (error["code"], error["reason"]) == ("auth_failed", "missing_claims")
        assert await nobody.closed_with() == 4401

        # A local-mode token means nothing to a bridge in firebase mode.
        local = await WsClient.open(bridge.url)
        await local.send({"type": "auth", "token": bridge.token("admin", "ops")})
        assert (await local.expect_type("error"))["reason"] == "invalid_token"


def test_bridge_refuses_to_start_with_the_emulator_in_production(
    emulator: AuthEmulator, services: Services
) -> None:
    env = {
        **os.environ,
        **services.environment("bridge"),
        "FLEETPULSE_ENVIRONMENT": "production",
        "FLEETPULSE_FIREBASE_PROJECT_ID": PROJECT_ID,
        "FIREBASE_AUTH_EMULATOR_HOST": emulator.host,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bridge"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "FIREBASE_AUTH_EMULATOR_HOST" in done.stderr
