"""The report applier: what couriers' phones report over MQTT, applied at least once.

Ingest stores every delivery status report and emergency in the ``device_reports`` inbox
in the same transaction as the rest of its batch, before the PUBACK (store.reports). This
loop takes the reports that have no outcome yet, oldest report time first, and applies
each in a transaction of its own that also records its outcome and queues its
announcement in the outbox, so a crash anywhere repeats at most uncommitted work, and a
repeat changes nothing:

- a status report goes through the same workflow as a courier's REST call (applied, a
  harmless repeat, or refused and stored as ``status_rejected``);
- an emergency becomes an alert (unique per courier and time), announced to admins once.

A status report that skips a step (``delivered`` while the order is ``picked_up``) may
have overtaken the report before it; it waits up to ``report_reorder_window_s`` for it.
A report that fails for any reason but an unavailable database is recorded as ``failed``
with the reason and never retried: nothing a device sends can wedge the loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection

from api.announcements import announce_alert, announce_status_change
from api.metrics import DEVICE_REPORTS
from api.state import ApiState
from mqttlink import Backoff
from store import reports
from store.notify import listening, next_notification
from store.orders import load_order
from store.reports import PendingReport
from workflow import Actor, apply_status, skips_ahead

log = logging.getLogger("api.reports")

Outcome = Literal["applied", "repeat", "rejected", "failed", "deferred"]
POLL_S = 1.0
BATCH_LIMIT = 200


async def report_applier_loop(state: ApiState) -> None:
    """Apply reports as they arrive (NOTIFY from ingest, polling as a fallback)."""
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    while True:
        try:
            async with listening(state.settings.dsn, reports.REPORTS_CHANNEL) as listener:
                backoff.reset()
                while True:
                    applied = await apply_pending_reports(state)
                    if applied < BATCH_LIMIT:
                        await next_notification(listener, within_s=POLL_S)
        except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
            log.warning("device reports wait: the database is unavailable (%s)", exc)
        await asyncio.sleep(backoff.next_delay())


async def apply_pending_reports(state: ApiState) -> int:
    """One pass over the inbox; returns how many reports it decided (deferred excluded).
    Raises only when the database is unavailable (the caller retries later)."""
    async with state.pool.connection() as conn:
        candidates = await reports.undecided(conn, limit=BATCH_LIMIT)
    decided = 0
    for report_id in candidates:
        try:
            outcome = await _apply_one(state, report_id)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            DEVICE_REPORTS.labels("unknown", "retried").inc()
            raise
        except Exception as exc:  # a report must never wedge the loop
            outcome = await _record_failure(state, report_id, exc)
        if outcome is not None and outcome != "deferred":
            decided += 1
    return decided


async def _apply_one(state: ApiState, report_id: int) -> Outcome | None:
    async with state.pool.connection() as conn, conn.transaction():
        report = await reports.claim(conn, report_id)
        if report is None:
            return None  # decided meanwhile, or another instance has it
        if report.kind == "emergency":
            outcome, reason = await _raise_alert(conn, state, report)
        else:
            outcome, reason = await _apply_status(conn, state, report)
        if outcome != "deferred":
            await reports.decide(conn, report.id, outcome=outcome, reason=reason)
    DEVICE_REPORTS.labels(report.kind, outcome).inc()
    if outcome in ("rejected", "deferred"):
        log.info(
            "%s report %s of %s for order %s: %s",
            outcome,
            report.payload.get("status"),
            report.courier_id,
            report.order_id,
            reason,
        )
    return outcome


async def _apply_status(
    conn: AsyncConnection[Any], state: ApiState, report: PendingReport
) -> tuple[Outcome, str]:
    assert report.order_id is not None
    target = str(report.payload.get("status"))
    order = await load_order(conn, report.order_id, for_update=True)
    young = datetime.now(UTC) - report.received_at < timedelta(
        seconds=state.settings.report_reorder_window_s
    )
    if order is not None and young and skips_ahead(order.status, target):
        return "deferred", f"waits for the step before {target} (order is {order.status})"
    actor = Actor(role="courier", uid=f"courier:{report.courier_id}", courier_id=report.courier_id)
    change = await apply_status(
        conn,
        order_id=report.order_id,
        target=target,
        actor=actor,
        note=str(report.payload.get("note") or ""),
        at=report.report_time,
        source="mqtt",
        dedup_key=f"applied/{report.dedup_key}",
        record_rejection=True,
        eta_params=state.eta_params,
    )
    if change.outcome == "applied":
        await announce_status_change(conn, state.settings.topic_prefix, change)
    return change.outcome, change.reason


async def _raise_alert(
    conn: AsyncConnection[Any], state: ApiState, report: PendingReport
) -> tuple[Outcome, str]:
    alert = await reports.insert_alert(conn, report)
    if alert is None:
        return "repeat", "the alert is stored already"
    await announce_alert(conn, state.settings.topic_prefix, alert, kind="alert_raised")
    return "applied", ""


async def _record_failure(state: ApiState, report_id: int, exc: Exception) -> Outcome | None:
    reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:500]
    log.error("device report %d cannot be applied, dead-lettered: %s", report_id, reason)
    async with state.pool.connection() as conn, conn.transaction():
        if await reports.claim(conn, report_id) is None:
            return None
        await reports.decide(conn, report_id, outcome="failed", reason=reason)
    DEVICE_REPORTS.labels("unknown", "failed").inc()
    return "failed"


__all__ = ["apply_pending_reports", "report_applier_loop"]
