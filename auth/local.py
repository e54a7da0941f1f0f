"""Local mode: RS256 tokens of the Firebase shape, signed with a key in the data folder."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth.errors import AuthConfigError, InvalidToken, MissingToken, TokenExpired
from auth.principal import Principal, principal_from_claims
from auth.verifier import Verifier

LOCAL_ISSUER: Final = "fleetpulse-local"
LOCAL_AUDIENCE: Final = "fleetpulse"
KEY_FILE_NAME: Final = "local-rs256.pem"
_REQUIRED_CLAIMS: Final = ["exp", "iat", "sub", "iss", "aud"]


def key_path(data_dir: Path) -> Path:
    return data_dir / "auth" / KEY_FILE_NAME


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The local signing key, created on first use. Two processes racing to create it agree
    on whichever file lands first (hard link, never overwrite)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
        finally:
            os.close(fd)
        try:
            os.link(scratch, path)
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise AuthConfigError(
            f"cannot read the local auth key {path}: {exc}. Delete it to have a new one made "
            "(tokens signed with the old key stop working)."
        ) from exc
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise AuthConfigError(f"{path} is not an RSA private key; delete it to have one made")
    return loaded


class LocalSigner:
    """Issues local-mode tokens; used by the CLI and by tests."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> LocalSigner:
        return cls(load_or_create_key(key_path(data_dir)))

    def issue(
        self,
        *,
        uid: str,
        role: str,
        courier_id: str | None = None,
        restaurant_id: str | None = None,
        ttl_s: float = 3600.0,
        now: float | None = None,
        extra_claims: dict[str, object] | None = None,
    ) -> str:
        issued = time.time() if now is None else now
        claims: dict[str, object] = {
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
            "sub": uid,
            "iat": int(issued),
            "exp": int(issued + ttl_s),
            "role": role,
        }
        if courier_id is not None:
            claims["courier_id"] = courier_id
        if restaurant_id is not None:
            claims["restaurant_id"] = restaurant_id
        if extra_claims:
            claims.update(extra_claims)
        return jwt.encode(claims, self._key, algorithm="RS256")


class LocalVerifier(Verifier):
    """Checks signature (RS256 only), expiry, issuer and audience, then the role claims."""

    def __init__(self, public_key: rsa.RSAPublicKey, *, leeway_s: float = 0.0) -> None:
        self._public_key = public_key
        self._leeway_s = leeway_s

    @classmethod
    def from_data_dir(cls, data_dir: Path, *, leeway_s: float = 0.0) -> LocalVerifier:
        return cls(load_or_create_key(key_path(data_dir)).public_key(), leeway_s=leeway_s)

    def verify(self, token: str) -> Principal:
        if not token:
            raise MissingToken("no token given; send a bearer token from `python -m auth token`")
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                audience=LOCAL_AUDIENCE,
                issuer=LOCAL_ISSUER,
                leeway=self._leeway_s,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("the token has expired; get a fresh one") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken(
                "the token's signature does not match this server's local key"
            ) from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token was refused: {exc}") from exc
        return principal_from_claims(claims)

    async def verify_async(self, token: str) -> Principal:
        # An RS256 check costs tens of microseconds; a thread hop would cost more.
        return self.verify(token)
