"""The transactional outbox: an announcement commits in the same transaction as the change
it announces, and the API's relay (api/outbox_relay.py) publishes it afterwards.

A crash between commit and publish loses nothing (the row waits); a crash between the
broker's PUBACK and :func:`mark_sent` publishes the row again with the same ``event_id``,
which readers use to drop the repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from protocol.server_topics import AlertMessage, AssignmentMessage, OrderStatusMessage

#: NOTIFY channel raised by every enqueue; the relay LISTENs on it.
OUTBOX_CHANNEL = "outbox"

_ENQUEUE = "INSERT INTO outbox (topic, message, kind) VALUES (%s, %s::jsonb, %s)"
_NOTIFY = f"SELECT pg_notify('{OUTBOX_CHANNEL}', '')"
_PENDING = """
SELECT id, topic, kind, (message || jsonb_build_object('event_id', id))::text
FROM outbox ORDER BY id LIMIT %s
"""
_MARK_SENT = "DELETE FROM outbox WHERE id = ANY(%s)"


@dataclass(frozen=True, slots=True)
class Announcement:
    id: int
    topic: str
    kind: str
    payload: bytes


async def enqueue(
    conn: AsyncConnection[Any],
    *,
    topic: str,
    message: OrderStatusMessage | AssignmentMessage | AlertMessage,
    kind: str,
) -> None:
    """Queue one announcement inside the caller's transaction. Its `event_id` (null here)
    becomes the row's id when the relay reads it (`_PENDING`)."""
    body = message.encode().decode()
    await conn.execute(_ENQUEUE, (topic, body, kind))
    await conn.execute(_NOTIFY)  # folded by PostgreSQL into one per transaction


async def pending(conn: AsyncConnection[Any], *, limit: int) -> list[Announcement]:
    """The oldest unsent announcements, each payload carrying its ``event_id``."""
    cur = await conn.execute(_PENDING, (limit,))
    return [
        Announcement(int(row[0]), str(row[1]), str(row[2]), str(row[3]).encode())
        for row in await cur.fetchall()
    ]


async def mark_sent(conn: AsyncConnection[Any], ids: Sequence[int]) -> None:
    await conn.execute(_MARK_SENT, (list(ids),))
