"""Who a verified token belongs to, and the claims that say so."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from auth.errors import MissingClaims

Role = Literal["admin", "courier", "customer", "restaurant"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

# Ids travel in MQTT topics, so courier and restaurant ids share the topic id alphabet.
_ENTITY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller. A customer is identified by `uid`; couriers and restaurants also
    carry the id of what they act for."""

    uid: str
    role: Role
    courier_id: str | None = None
    restaurant_id: str | None = None
    # Epoch seconds after which the token no longer counts.
    expires_at: float = 0.0

    def claims(self) -> dict[str, str]:
        """The custom claims that describe this principal (the shape Firebase tokens carry)."""
        claims: dict[str, str] = {"role": self.role}
        if self.courier_id is not None:
            claims["courier_id"] = self.courier_id
        if self.restaurant_id is not None:
            claims["restaurant_id"] = self.restaurant_id
        return claims


def _entity_id(claims: Mapping[str, object], name: str, role: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not _ENTITY_ID.match(value):
        raise MissingClaims(
            f"a {role} token needs a {name!r} claim of 1-64 characters [A-Za-z0-9_-]; "
            f"got {value!r}. Set it in the user's custom claims."
        )
    return value


def principal_from_claims(claims: Mapping[str, object]) -> Principal:
    """Build a Principal from decoded token claims, or raise MissingClaims."""
    uid = claims.get("uid", claims.get("sub"))
    if not isinstance(uid, str) or not uid or len(uid) > 128:
        raise MissingClaims("the token has no usable 'sub' (user id) claim")
    role = claims.get("role")
    if role not in ROLES:
        raise MissingClaims(
            f"the token's 'role' claim is {role!r}; it must be one of {', '.join(ROLES)}. "
            "Set it in the user's custom claims."
        )
    exp = claims.get("exp")
    expires_at = float(exp) if isinstance(exp, int | float) else 0.0
    courier_id = _entity_id(claims, "courier_id", role) if role == "courier" else None
    restaurant_id = _entity_id(claims, "restaurant_id", role) if role == "restaurant" else None
    return Principal(
        uid=uid,
        role=role,
        courier_id=courier_id,
        restaurant_id=restaurant_id,
        expires_at=expires_at,
    )
