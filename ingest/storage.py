"""Writing one batch of decoded messages to TimescaleDB in one transaction.

Positions go in with binary COPY. COPY cannot skip the rows a redelivery repeats, so the
batch is first tried as a plain COPY inside a savepoint (the common case: no duplicates,
~2x the speed of staging); on a unique violation the savepoint is rolled back and the batch
goes through a temporary staging table and ``INSERT ... ON CONFLICT DO NOTHING``.
bench/dedup measures the alternatives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
import psycopg
from psycopg import errors

from protocol import DeliveryStatusEvent, EmergencyEvent, Event, Fix
from store.positions import (
    COPY_POSITIONS,
    COPY_STAGE,
    CREATE_STAGE,
    INSERT_FROM_STAGE,
    POSITION_TYPES,
    UPSERT_LAST_POSITIONS,
    PositionRow,
    newest_per_source,
)
from store.reports import REPORTS_CHANNEL

INSERT_EVENT = """
INSERT INTO events
    (event_time, kind, source_kind, source_id, order_id, payload, dedup_key, received_at)
VALUES (%s, %s, 'courier', %s, %s, %s::jsonb, %s, %s)
ON CONFLICT (dedup_key, event_time) DO NOTHING
"""
# Couriers' status reports and emergencies: the inbox the API's report applier reads
# (store/reports.py); NOTIFY wakes it once the batch commits.
INSERT_DEVICE_REPORT = """
INSERT INTO device_reports
    (kind, courier_id, order_id, report_time, payload, dedup_key, received_at)
VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s)
ON CONFLICT (dedup_key, report_time) DO NOTHING
"""
NOTIFY_DEVICE_REPORTS = f"SELECT pg_notify('{REPORTS_CHANNEL}', '')"
INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (received_at, topic, payload, reason) VALUES (%s, %s, %s, %s)
"""


@dataclass(slots=True)
class BatchRows:
    """What one batch stores. Positions are keyed by (kind, id, time): a fix repeated
    inside the batch is counted as a duplicate here and sent once."""

    positions: dict[tuple[str, str, datetime], PositionRow] = field(default_factory=dict)
    events: list[tuple[Event, datetime]] = field(default_factory=list)
    dead_letters: list[tuple[datetime, str, bytes, str]] = field(default_factory=list)
    duplicates: int = 0

    def add_fixes(self, fixes: Iterable[Fix], received_at: datetime) -> None:
        positions = self.positions
        for fix in fixes:
            key = (fix.source_kind, fix.source_id, fix.fix_time)
            if key in positions:
                self.duplicates += 1
                continue
            positions[key] = (
                fix.source_kind,
                fix.source_id,
                fix.fix_time,
                fix.lat,
                fix.lon,
                fix.speed,
                fix.heading,
                fix.accuracy,
                fix.altitude,
                fix.battery,
                received_at,
            )


@dataclass(slots=True)
class WriteResult:
    positions: int = 0
    duplicates: int = 0
    events: int = 0
    dead_letters: int = 0
    used_staging: bool = False


class BatchStore:
    """Writes BatchRows over one connection; the caller owns retries and reconnects."""

    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self.conn = conn

    async def write(self, rows: BatchRows) -> WriteResult:
        """One transaction: positions, last positions, events, dead letters, commit."""
        result = WriteResult(duplicates=rows.duplicates)
        async with self.conn.transaction():
            if rows.positions:
                values = list(rows.positions.values())
                inserted, result.used_staging = await self._insert_positions(values)
                result.positions = inserted
                result.duplicates += len(values) - inserted
                await self._upsert_last_positions(values)
            if rows.events:
                result.events = await self._insert_events(rows.events)
            if rows.dead_letters:
                async with self.conn.cursor() as cur:
                    await cur.executemany(INSERT_DEAD_LETTER, rows.dead_letters)
                result.dead_letters = len(rows.dead_letters)
        return result

    async def _insert_positions(self, values: Sequence[PositionRow]) -> tuple[int, bool]:
        try:
            async with (
                self.conn.transaction(),
                self.conn.cursor() as cur,
                cur.copy(COPY_POSITIONS) as copy,
            ):
                copy.set_types(POSITION_TYPES)
                for row in values:
                    await copy.write_row(row)
            return len(values), False
        except errors.UniqueViolation:
            pass
        async with self.conn.cursor() as cur:
            await cur.execute(CREATE_STAGE)
            async with cur.copy(COPY_STAGE) as copy:
                copy.set_types(POSITION_TYPES)
                for row in values:
                    await copy.write_row(row)
            await cur.execute(INSERT_FROM_STAGE)
            inserted = cur.rowcount
            await cur.execute("TRUNCATE positions_stage")
        return inserted, True

    async def _upsert_last_positions(self, values: Sequence[PositionRow]) -> None:
        await self.conn.execute(UPSERT_LAST_POSITIONS, newest_per_source(values))

    async def _insert_events(self, events: Sequence[tuple[Event, datetime]]) -> int:
        stored = reports = 0
        async with self.conn.cursor() as cur:
            for event, received_at in events:
                if isinstance(event, DeliveryStatusEvent | EmergencyEvent):
                    await cur.execute(INSERT_DEVICE_REPORT, _device_report(event, received_at))
                    reports += cur.rowcount
                    stored += cur.rowcount
                    continue
                await cur.execute(
                    INSERT_EVENT,
                    (
                        event.time,
                        event.kind,
                        event.courier_id,
                        None,
                        msgspec.json.encode(event).decode(),
                        event.dedup_key,
                        received_at,
                    ),
                )
                stored += cur.rowcount
            if reports:
                await cur.execute(NOTIFY_DEVICE_REPORTS)
        return stored


def _device_report(
    event: DeliveryStatusEvent | EmergencyEvent, received_at: datetime
) -> tuple[object, ...]:
    order_id = event.order_id if isinstance(event, DeliveryStatusEvent) else None
    return (
        event.kind,
        event.courier_id,
        order_id,
        event.time,
        msgspec.json.encode(event).decode(),
        event.dedup_key,
        received_at,
    )
