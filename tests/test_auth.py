"""The auth package: local RS256 tokens are checked for expiry, signature, key and claims."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from auth import (
    AuthConfigError,
    InvalidToken,
    LocalSigner,
    LocalVerifier,
    MissingClaims,
    MissingToken,
    Principal,
    TokenExpired,
    build_verifier,
    key_path,
)
from config import load_settings
from config.settings import PROJECT_ROOT


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def signer(data_dir: Path) -> LocalSigner:
    return LocalSigner.from_data_dir(data_dir)


@pytest.fixture
def verifier(data_dir: Path, signer: LocalSigner) -> LocalVerifier:
    return LocalVerifier.from_data_dir(data_dir)


def test_round_trip_for_every_role(signer: LocalSigner, verifier: LocalVerifier) -> None:
    cases = [
        ({"uid": "ops", "role": "admin"}, Principal(uid="ops", role="admin")),
        ({"uid": "alice", "role": "customer"}, Principal(uid="alice", role="customer")),
        (
            {"uid": "bob", "role": "courier", "courier_id": "c-7"},
            Principal(uid="bob", role="courier", courier_id="c-7"),
        ),
        (
            {"uid": "pizza", "role": "restaurant", "restaurant_id": "r_1"},
            Principal(uid="pizza", role="restaurant", restaurant_id="r_1"),
        ),
    ]
    for kwargs, expected in cases:
        principal = verifier.verify(signer.issue(ttl_s=60, **kwargs))  # type: ignore[arg-type]
        assert principal.uid == expected.uid
        assert principal.role == expected.role
        assert principal.courier_id == expected.courier_id
        assert principal.restaurant_id == expected.restaurant_id
        assert time.time() + 50 < principal.expires_at <= time.time() + 61


def test_expired_token_is_refused(signer: LocalSigner, verifier: LocalVerifier) -> None:
    token = signer.issue(uid="alice", role="customer", ttl_s=10, now=time.time() - 60)
    with pytest.raises(TokenExpired, match="expired"):
        verifier.verify(token)


def test_forged_claims_break_the_signature(signer: LocalSigner, verifier: LocalVerifier) -> None:
    header, payload, signature = signer.issue(uid="alice", role="customer").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(f"{header}.{forged_payload}.{signature}")


def test_token_signed_with_another_key_is_refused(verifier: LocalVerifier) -> None:
    stranger = LocalSigner(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(stranger.issue(uid="mallory", role="admin"))


def test_unsigned_and_symmetric_tokens_are_refused(data_dir: Path, verifier: LocalVerifier) -> None:
    claims = {
        "iss": "fleetpulse-local",
        "aud": "fleetpulse",
        "sub": "mallory",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
        "role": "admin",
    }
    unsigned = jwt.encode(claims, key="", algorithm="none")
    with pytest.raises(InvalidToken):
        verifier.verify(unsigned)
    # The classic confusion: HMAC keyed with the (public) verification key.
    hmac = jwt.encode(claims, key="not-the-rsa-key-but-long-enough-for-hmac!", algorithm="HS256")
    with pytest.raises(InvalidToken):
        verifier.verify(hmac)


def test_wrong_audience_or_issuer_is_refused(signer: LocalSigner, verifier: LocalVerifier) -> None:
    with pytest.raises(InvalidToken, match=r"(?i)audience"):
        verifier.verify(signer.issue(uid="a", role="admin", extra_claims={"aud": "other"}))
    with pytest.raises(InvalidToken, match=r"(?i)issuer"):
        verifier.verify(signer.issue(uid="a", role="admin", extra_claims={"iss": "other"}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"role": "courier"}, "courier_id"),
        ({"role": "restaurant"}, "restaurant_id"),
        ({"role": "restaurant", "restaurant_id": "bad/id"}, "restaurant_id"),
        ({"role": "superuser"}, "role"),
        ({"role": "customer", "extra_claims": {"sub": ""}}, "sub"),
    ],
)
def test_missing_or_bad_claims_are_refused(
    signer: LocalSigner, verifier: LocalVerifier, kwargs: dict[str, object], match: str
) -> None:
    token = signer.issue(uid="someone", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(MissingClaims, match=match):
        verifier.verify(token)


def test_token_without_role_claim_is_refused(data_dir: Path, verifier: LocalVerifier) -> None:
    key = LocalSigner.from_data_dir(data_dir)._key
    now = int(time.time())
    claims = {"iss": "fleetpulse-local", "aud": "fleetpulse", "sub": "x", "iat": now}
    no_role = jwt.encode({**claims, "exp": now + 60}, key, algorithm="RS256")
    with pytest.raises(MissingClaims, match="role"):
        verifier.verify(no_role)
    no_expiry = jwt.encode({**claims, "role": "admin"}, key, algorithm="RS256")
    with pytest.raises(InvalidToken, match="exp"):
        verifier.verify(no_expiry)


def test_empty_and_garbage_tokens(verifier: LocalVerifier) -> None:
    with pytest.raises(MissingToken):
        verifier.verify("")
    with pytest.raises(InvalidToken):
        verifier.verify("not.a.jwt")


def test_key_is_private_and_stable(data_dir: Path, signer: LocalSigner) -> None:
    path = key_path(data_dir)
    assert path.stat().st_mode & 0o777 == 0o600
    again = LocalVerifier.from_data_dir(data_dir)
    assert again.verify(signer.issue(uid="alice", role="customer")).uid == "alice"


def test_settings_select_the_mode(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    local = load_settings(data_dir=data_dir)
    assert local.effective_auth_mode == "local"
    assert isinstance(build_verifier(local), LocalVerifier)
    production = load_settings(data_dir=data_dir, environment="production")
    assert production.effective_auth_mode == "firebase"
    with pytest.raises(AuthConfigError, match="FIREBASE_PROJECT_ID"):
        build_verifier(production)
    with pytest.raises(AuthConfigError, match="production"):
        build_verifier(
            load_settings(data_dir=data_dir, environment="production", auth_mode="local")
        )


def test_emulator_host_in_production_refuses_to_start(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    settings = load_settings(
        data_dir=data_dir, environment="production", firebase_project_id="demo-x"
    )
    with pytest.raises(AuthConfigError, match="FIREBASE_AUTH_EMULATOR_HOST"):
        build_verifier(settings)


def test_cli_prints_a_token_the_verifier_accepts(data_dir: Path) -> None:
    env = {**os.environ, "FLEETPULSE_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "auth", "token", "--role", "courier", "--uid", "bob"]
    done = subprocess.run(
        [*command, "--courier-id", "c1", "--ttl", "120"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    principal = LocalVerifier.from_data_dir(data_dir).verify(done.stdout.strip())
    assert (principal.uid, principal.role, principal.courier_id) == ("bob", "courier", "c1")
    refused = subprocess.run(
        command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2
    assert "courier_id" in refused.stderr
