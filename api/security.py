"""Who is calling: the bearer token becomes a Principal (auth package); roles are checked here."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import Forbidden, Unauthorized
from auth import AuthError, Principal, Verifier
from workflow import Actor

_bearer = HTTPBearer(auto_error=False, description="Firebase ID token (or a local-mode token)")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token: send `Authorization: Bearer <ID token>`")
    verifier: Verifier = request.app.state.verifier
    try:
        return await verifier.verify_async(credentials.credentials)
    except AuthError as exc:
        raise Unauthorized(str(exc)) from None


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def actor_of(principal: Principal) -> Actor:
    return Actor(
        role=principal.role,
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
