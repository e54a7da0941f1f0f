"""Authentication shared by the bridge and the API: Firebase ID tokens in production,
locally signed RS256 tokens of the same shape for development and tests."""

from auth.errors import (
    AuthConfigError,
    AuthError,
    InvalidToken,
    MissingClaims,
    MissingToken,
    TokenExpired,
)
from auth.firebase import EMULATOR_HOST_VARIABLE, FirebaseVerifier
from auth.local import LOCAL_AUDIENCE, LOCAL_ISSUER, LocalSigner, LocalVerifier, key_path
from auth.principal import ROLES, Principal, Role, principal_from_claims
from auth.selection import build_verifier, check_auth_settings
from auth.verifier import Verifier

__all__ = [
    "EMULATOR_HOST_VARIABLE",
    "LOCAL_AUDIENCE",
    "LOCAL_ISSUER",
    "ROLES",
    "AuthConfigError",
    "AuthError",
    "FirebaseVerifier",
    "InvalidToken",
    "LocalSigner",
    "LocalVerifier",
    "MissingClaims",
    "MissingToken",
    "Principal",
    "Role",
    "TokenExpired",
    "Verifier",
    "build_verifier",
    "check_auth_settings",
    "key_path",
    "principal_from_claims",
]
