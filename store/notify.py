"""LISTEN/NOTIFY: how the report applier and the outbox relay learn of new rows at once
(they poll as well, so a lost notification only delays)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql


@asynccontextmanager
async def listening(dsn: str, channel: str) -> AsyncIterator[AsyncConnection[Any]]:
    """An autocommit connection that LISTENs on `channel` for as long as it is open."""
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, connect_timeout=5
    ) as conn:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield conn


async def next_notification(conn: AsyncConnection[Any], *, within_s: float) -> None:
    """Return at the next notification (or one that came during the last query), or after
    `within_s`."""
    async for _ in conn.notifies(timeout=within_s, stop_after=1):
        pass
