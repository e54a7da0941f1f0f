"""What every route needs: settings, the database pool and the outbox relay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.errors import ApiError, Conflict, ServiceUnavailable
from api.outbox_relay import OutboxRelay
from config import Settings
from workflow import EtaParameters


@dataclass
class ApiState:
    settings: Settings
    pool: AsyncConnectionPool[AsyncConnection[Any]]
    relay: OutboxRelay
    eta_params: EtaParameters

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection inside a transaction; database failures become API errors."""
        try:
            async with self.pool.connection(timeout=10) as conn, conn.transaction():
                yield conn
        except ApiError:
            raise
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(f"already exists: {_detail(exc)}") from None
        except psycopg.errors.ForeignKeyViolation as exc:
            raise Conflict(f"refers to something missing or still in use: {_detail(exc)}") from None
        except psycopg.errors.CheckViolation as exc:
            raise InvalidValue(f"a value is out of range: {_detail(exc)}") from None
        except psycopg.errors.DataException as exc:
            raise InvalidValue(f"a value is invalid: {_detail(exc)}") from None
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable(f"the database is unavailable: {exc}") from None
        except TimeoutError:
            raise ServiceUnavailable("the database is busy; try again") from None


class InvalidValue(ApiError):
    status_code = 422
    code = "invalid"


def _detail(exc: psycopg.Error) -> str:
    diag = exc.diag
    return diag.message_detail or diag.message_primary or type(exc).__name__


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(api_state)]
