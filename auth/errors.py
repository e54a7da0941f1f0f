"""Typed failures of authentication; each message says what to do about it."""

from __future__ import annotations


class AuthError(Exception):
    """A token was refused. `reason` is a short, stable label for metrics and error frames."""

    reason = "invalid_token"


class MissingToken(AuthError):
    reason = "missing_token"


class TokenExpired(AuthError):
    reason = "token_expired"


class InvalidToken(AuthError):
    """Bad signature, wrong key, wrong issuer or audience, or not a JWT at all."""

    reason = "invalid_token"


class MissingClaims(AuthError):
    """A well-signed token without the claims a role needs (role, courier_id, restaurant_id)."""

    reason = "missing_claims"


class AuthConfigError(Exception):
    """The auth settings cannot be used; the process must not start."""
