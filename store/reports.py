"""The device_reports inbox: couriers' status reports and emergencies, as ingest stored
them, and the outcome the API's applier recorded for each (one writer each: ingest inserts
reports, the API inserts outcomes). An emergency's alert is written by store.alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection

from store import alerts
from store.alerts import AlertRow

#: NOTIFY channel ingest raises when a batch stored reports; the applier LISTENs on it.
REPORTS_CHANNEL = "device_reports"

ReportOutcome = Literal["applied", "repeat", "rejected", "failed"]

_UNDECIDED = """
SELECT r.id FROM device_reports r
WHERE NOT EXISTS (SELECT 1 FROM report_outcomes o WHERE o.report_id = r.id)
ORDER BY r.report_time, r.id
LIMIT %s
"""
_CLAIM = """
SELECT r.id, r.kind, r.courier_id, r.order_id, r.report_time, r.payload, r.dedup_key,
       r.received_at
FROM device_reports r
WHERE r.id = %s AND NOT EXISTS (SELECT 1 FROM report_outcomes o WHERE o.report_id = r.id)
FOR UPDATE OF r SKIP LOCKED
"""
_DECIDE = "INSERT INTO report_outcomes (report_id, outcome, reason) VALUES (%s, %s, %s)"


@dataclass(frozen=True, slots=True)
class PendingReport:
    id: int
    kind: Literal["status", "emergency"]
    courier_id: str
    order_id: str | None
    report_time: datetime
    payload: dict[str, Any]
    dedup_key: str
    received_at: datetime


async def undecided(conn: AsyncConnection[Any], *, limit: int) -> list[int]:
    """Ids of reports without an outcome, oldest report time first."""
    cur = await conn.execute(_UNDECIDED, (limit,))
    return [int(row[0]) for row in await cur.fetchall()]


async def claim(conn: AsyncConnection[Any], report_id: int) -> PendingReport | None:
    """Lock one undecided report for the caller's transaction; None if it was decided or
    another applier holds it."""
    cur = await conn.execute(_CLAIM, (report_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    return PendingReport(*row)


async def decide(
    conn: AsyncConnection[Any], report_id: int, *, outcome: ReportOutcome, reason: str = ""
) -> None:
    await conn.execute(_DECIDE, (report_id, outcome, reason[:2000]))


async def insert_alert(conn: AsyncConnection[Any], report: PendingReport) -> AlertRow | None:
    """The alert an emergency report raises; None if it is stored already."""
    payload = report.payload
    return await alerts.insert_alert_once(
        conn,
        courier_id=report.courier_id,
        raised_at=report.report_time,
        lat=payload.get("lat"),
        lon=payload.get("lon"),
        message=str(payload.get("message") or "")[:2000],
    )
