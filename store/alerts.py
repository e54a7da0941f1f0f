"""The alerts queries: emergencies couriers raised (over REST, or over MQTT through the
report inbox) and their acknowledgement by an admin. The API is the one writer.

An alert is unique per courier and time, so an emergency report applied twice is stored
once (:func:`insert_alert_once`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One row of ``alerts``; its fields name the columns (:data:`ALERT_COLUMNS`)."""

    id: int
    courier_id: str
    raised_at: datetime
    lat: float | None
    lon: float | None
    message: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None


ALERT_COLUMNS = ", ".join(field.name for field in fields(AlertRow))
_INSERT = f"""
INSERT INTO alerts (courier_id, raised_at, lat, lon, message)
VALUES (%s, %s, %s, %s, %s) RETURNING {ALERT_COLUMNS}
"""  # noqa: S608
_INSERT_ONCE = f"""
INSERT INTO alerts (courier_id, raised_at, lat, lon, message)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (courier_id, raised_at) DO NOTHING
RETURNING {ALERT_COLUMNS}
"""  # noqa: S608
_LIST_OPEN = f"""
SELECT {ALERT_COLUMNS} FROM alerts WHERE acknowledged_at IS NULL
ORDER BY raised_at DESC LIMIT %s
"""  # noqa: S608
_LIST_ALL = f"SELECT {ALERT_COLUMNS} FROM alerts ORDER BY raised_at DESC LIMIT %s"  # noqa: S608
_LOAD_FOR_UPDATE = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = %s FOR UPDATE"  # noqa: S608
_ACKNOWLEDGE = f"""
UPDATE alerts SET acknowledged_by = %s, acknowledged_at = now()
WHERE id = %s RETURNING {ALERT_COLUMNS}
"""  # noqa: S608


async def _fetch(
    conn: AsyncConnection[Any], query: str, params: Sequence[object]
) -> list[AlertRow]:
    """Rows as AlertRow, whatever row factory the caller's connection has."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return [AlertRow(*row) for row in await cur.fetchall()]


async def _fetch_one(
    conn: AsyncConnection[Any], query: str, params: Sequence[object]
) -> AlertRow | None:
    rows = await _fetch(conn, query, params)
    return rows[0] if rows else None


async def insert_alert(
    conn: AsyncConnection[Any],
    *,
    courier_id: str,
    raised_at: datetime,
    lat: float | None,
    lon: float | None,
    message: str,
) -> AlertRow:
    """A new open alert."""
    row = await _fetch_one(conn, _INSERT, (courier_id, raised_at, lat, lon, message))
    assert row is not None
    return row


async def insert_alert_once(
    conn: AsyncConnection[Any],
    *,
    courier_id: str,
    raised_at: datetime,
    lat: float | None,
    lon: float | None,
    message: str,
) -> AlertRow | None:
    """A new open alert; None if the courier's alert of that time is stored already."""
    return await _fetch_one(conn, _INSERT_ONCE, (courier_id, raised_at, lat, lon, message))


async def list_alerts(conn: AsyncConnection[Any], *, open_only: bool, limit: int) -> list[AlertRow]:
    """Alerts newest first: the open ones, or all."""
    return await _fetch(conn, _LIST_OPEN if open_only else _LIST_ALL, (limit,))


async def lock_alert(conn: AsyncConnection[Any], alert_id: int) -> AlertRow | None:
    """The alert, locked for the caller's transaction; None if there is none."""
    return await _fetch_one(conn, _LOAD_FOR_UPDATE, (alert_id,))


async def acknowledge(conn: AsyncConnection[Any], alert_id: int, *, by: str) -> AlertRow:
    """Record who acknowledged the alert, now."""
    row = await _fetch_one(conn, _ACKNOWLEDGE, (by, alert_id))
    assert row is not None, f"no alert {alert_id}"
    return row


__all__ = [
    "ALERT_COLUMNS",
    "AlertRow",
    "acknowledge",
    "insert_alert",
    "insert_alert_once",
    "list_alerts",
    "lock_alert",
]
