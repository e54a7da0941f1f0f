"""Firebase mode: ID tokens checked by firebase-admin; the role comes from custom claims."""

from __future__ import annotations

import os
import uuid

import firebase_admin
from firebase_admin import auth as firebase_auth

from auth.errors import AuthError, InvalidToken, MissingToken, TokenExpired
from auth.principal import Principal, principal_from_claims
from auth.verifier import Verifier

EMULATOR_HOST_VARIABLE = "FIREBASE_AUTH_EMULATOR_HOST"


def emulator_host() -> str:
    return os.environ.get(EMULATOR_HOST_VARIABLE, "")


class FirebaseVerifier(Verifier):
    def __init__(self, *, project_id: str, clock_skew_s: int = 0) -> None:
        # A named app of our own, so we never collide with another initialize_app() call.
        self._app = firebase_admin.initialize_app(
            options={"projectId": project_id}, name=f"fleetpulse-auth-{uuid.uuid4().hex[:8]}"
        )
        self._clock_skew_s = clock_skew_s
        self.project_id = project_id

    def verify(self, token: str) -> Principal:
        if not token:
            raise MissingToken("no token given; send a Firebase ID token")
        try:
            claims = firebase_auth.verify_id_token(
                token, app=self._app, clock_skew_seconds=self._clock_skew_s
            )
        except firebase_auth.ExpiredIdTokenError as exc:
            raise TokenExpired("the Firebase ID token has expired; refresh it") from exc
        except (firebase_auth.InvalidIdTokenError, ValueError) as exc:
            raise InvalidToken(f"the Firebase ID token was refused: {exc}") from exc
        except firebase_auth.CertificateFetchError as exc:
            raise AuthError(f"cannot fetch Google's token certificates: {exc}") from exc
        return principal_from_claims(claims)

    def close(self) -> None:
        firebase_admin.delete_app(self._app)
