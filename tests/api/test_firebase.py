"""End to end through the real Firebase Auth emulator: an ID token from a user with custom
claims works on the API, with the role and ownership from those claims."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from api import create_app
from auth import FirebaseVerifier
from tests.api.conftest import ApiServer, api_settings, serving
from tests.firebase_emulator import PROJECT_ID, AuthEmulator, running_auth_emulator
from tests.firebase_emulator import unavailable_reason as emulator_unavailable
from tests.services import Services

pytestmark = pytest.mark.skipif(
    emulator_unavailable() is not None, reason=str(emulator_unavailable())
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[AuthEmulator]:
    with running_auth_emulator() as running:
        yield running


def test_emulator_id_token_works_on_the_api(
    emulator: AuthEmulator,
    services: Services,
    api_server: ApiServer,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    courier_id = f"fb-{unique}"
    admin = api_server.client(api_server.token("admin"))
    assert admin.post("/couriers", json={"id": courier_id, "name": "Fi"}).status_code == 201
    uid = emulator.create_user(f"rider{unique}@example.com", "secret-pass")
    emulator.set_custom_claims(uid, {"role": "courier", "courier_id": courier_id})
    token = emulator.sign_in(f"rider{unique}@example.com", "secret-pass")
    emulator.create_user(f"nobody{unique}@example.com", "secret-pass")
    claimless = emulator.sign_in(f"nobody{unique}@example.com", "secret-pass")

    # firebase-admin reads the emulator address from the environment when it verifies.
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", emulator.host)
    settings = api_settings(services, auth_mode="firebase", firebase_project_id=PROJECT_ID)
    verifier = FirebaseVerifier(project_id=PROJECT_ID)
    try:
        with serving(create_app(settings, verifier=verifier, background=False)) as base_url:

            def get(path: str, bearer: str) -> httpx.Response:
                return httpx.get(
                    base_url + path, headers={"Authorization": f"Bearer {bearer}"}, timeout=20
                )

            mine = get(f"/couriers/{courier_id}", token)
            assert mine.status_code == 200, mine.text
            assert mine.json()["id"] == courier_id
            assert get("/couriers/someone-else", token).status_code == 404
            assert get("/analytics", token).status_code == 403
            refused = get("/orders", claimless)
            assert refused.status_code == 401
            assert "role" in refused.json()["error"]["message"]
            # A local-mode token means nothing to an API in firebase mode.
            assert get("/orders", api_server.token("admin")).status_code == 401
    finally:
        verifier.close()
