"""Who is calling: the bearer token becomes a Principal (auth package); roles are checked here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import Forbidden, Unauthorized
from workflow import Actor


class Principal(Protocol):
    @property
    def uid(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def courier_id(self) -> str | None: ...
    @property
    def restaurant_id(self) -> str | None: ...


TokenCheck = Callable[[str], Awaitable[Principal]]

_bearer = HTTPBearer(auto_error=False, description="Firebase ID token (or a local-mode token)")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token: send `Authorization: Bearer <ID token>`")
    check: TokenCheck = request.app.state.check_token
    return await check(credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def actor_of(principal: Principal) -> Actor:
    role = principal.role
    if role not in ("admin", "courier", "customer", "restaurant"):
        raise Forbidden(f"unknown role {role!r}")
    return Actor(
        role=role,  # type: ignore[arg-type]
        uid=principal.uid,
        courier_id=principal.courier_id,
        restaurant_id=principal.restaurant_id,
    )


def require(principal: Principal, *roles: str) -> None:
    if principal.role not in roles:
        raise Forbidden(f"this needs the role {' or '.join(roles)}; you are {principal.role}")


def admin(principal: CurrentPrincipal) -> Principal:
    require(principal, "admin")
    return principal


AdminPrincipal = Annotated[Principal, Depends(admin)]
