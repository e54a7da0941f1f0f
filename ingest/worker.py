"""The ingest worker: MQTT messages in, batched transactions out, acks after commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from config import Settings
from ingest.metrics import IngestMetrics
from ingest.mqtt import MqttLink
from ingest.storage import BatchRows, BatchStore, WriteResult
from mqttlink import Backoff
from protocol import Decoded, MessageDecoder

log = logging.getLogger("ingest")


@dataclass(slots=True)
class Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: float  # epoch seconds
    received_mono: float


class DrainDeadlineError(Exception):
    """Stopping took longer than ingest_drain_timeout_s; what is unacked stays at the broker."""


class Ingestor:
    """Owns the MQTT link, the pending messages and the database connection.

    Messages wait in ``pending`` until a batch is full (ingest_batch_rows) or its oldest
    message is ingest_batch_age_ms old; the batch is written in one transaction and only then
    acknowledged. If the database is down the batch is retried with backoff and nothing is
    acknowledged; the broker stops sending once ingest_receive_maximum messages are unacked.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: IngestMetrics | None = None,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or IngestMetrics()
        self.decoder = MessageDecoder(
            prefix=settings.topic_prefix, max_future_skew_s=settings.max_future_skew_s
        )
        self.link = MqttLink(settings, on_message=self._on_message, client_id=client_id)
        self.pending: list[Received] = []
        #: SIGTERM: leave the shared group, take in what the broker already sent, then stop.
        self.leaving = asyncio.Event()
        self.stopping = asyncio.Event()
        #: Messages taken in so far, and batches taken out of ``pending`` but not yet acked.
        self._received_count = 0
        self._writes_in_flight = 0
        self._wake = asyncio.Event()
        self._writers = settings.ingest_db_connections
        self._conns: list[psycopg.AsyncConnection[tuple[object, ...]] | None] = [
            None
        ] * self._writers
        self._stores: list[BatchStore | None] = [None] * self._writers
        self._drain_deadline: float | None = None
        self._batch_rows = settings.ingest_batch_rows
        self._batch_age = settings.ingest_batch_age_ms / 1000

    # --- receiving ------------------------------------------------------------------

    def _on_message(self, topic: str | bytes, payload: bytes, mid: int, qos: int) -> None:
        if self.stopping.is_set():
            return  # not acknowledged: the broker keeps it for the next worker
        if isinstance(topic, bytes):  # brokers refuse such topics; never trust that
            topic = topic.decode("utf-8", errors="backslashreplace")
        now = time.monotonic()
        self._received_count += 1
        pending = self.pending
        pending.append(
            Received(
                topic,
                payload,
                mid,
                qos,
                self.link.generation,
                time.time(),
                now,
            )
        )
        if len(pending) == 1 or len(pending) >= self._batch_rows:
            self._wake.set()

    # --- running --------------------------------------------------------------------

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``), then drain and disconnect."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        try:
            try:
                for slot in range(self._writers):
                    await self._connect(slot)  # early, so the first batches do not wait
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                log.warning("database not reachable yet (%s); will retry per batch", exc)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.link.run(self.stopping), name="mqtt-link")
                tasks.create_task(self._write_batches(), name="batch-writer")
                tasks.create_task(self._report_gauges(), name="gauges")
                tasks.create_task(self._leave_group_on_stop(), name="leave-group")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.link.disconnect()
            for slot in range(self._writers):
                await self._drop_connection(slot)
            log.info("stopped; %d messages left unacknowledged at the broker", len(self.pending))

    def stop(self) -> None:
        """First call: leave the shared group and drain (at most ingest_drain_timeout_s).
        A second call stops taking messages at once."""
        if not self.leaving.is_set():
            log.info(
                "stopping: leaving the shared group, then draining (at most %.0f s)",
                self.settings.ingest_drain_timeout_s,
            )
            self._drain_deadline = time.monotonic() + self.settings.ingest_drain_timeout_s
            self.leaving.set()
        else:
            self._stop_taking_messages()

    def _stop_taking_messages(self) -> None:
        if not self.stopping.is_set():
            log.info("draining %d pending messages", len(self.pending))
            self.stopping.set()
            self._wake.set()

    async def _leave_group_on_stop(self) -> None:
        """Leave the group, then take in what the broker had already routed to this
        session (in flight, or queued behind the receive maximum); only then stop taking
        messages. Messages left unacknowledged here would wait in this session for this
        worker's return.

        The end is found by a fence, not by a quiet period (a live stream is never quiet
        on the standby subscription): once everything received is stored and acked, a
        round trip to the broker that brings no new message means the session holds no
        more of the group's messages. Each ack lets the broker send one more queued
        message, ahead of the fence's answer; what it queued after leaving is standby
        traffic and is left for later."""
        await self.leaving.wait()
        deadline = self._drain_deadline or time.monotonic()
        left = await self.link.leave_group(within_s=max(0.1, deadline - time.monotonic()))
        while left and not self.stopping.is_set():
            if not await self._all_acked(deadline):
                break
            received = self._received_count
            if not await self.link.round_trip(within_s=max(0.1, deadline - time.monotonic())):
                break
            if self._received_count == received:
                break
        self._stop_taking_messages()

    async def _all_acked(self, deadline: float) -> bool:
        """Wait until nothing is pending or being written; False at the deadline."""
        while self.pending or self._writes_in_flight:
            if time.monotonic() >= deadline or self.stopping.is_set():
                return False
            await asyncio.sleep(0.01)
        return True

    async def _report_gauges(self) -> None:
        while not self.stopping.is_set():
            self.metrics.pending.set(len(self.pending))
            self.metrics.connected.set(1 if self.link.connected.is_set() else 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)

    async def _write_batches(self) -> None:
        """Take batches in arrival order and write up to ingest_db_connections at once,
        decoding the next batch meanwhile.

        Each write commits on its own connection but acknowledges only after the write
        before it has acknowledged, so PUBACKs go out in the order the messages arrived."""
        writing: deque[asyncio.Task[None]] = deque()
        try:
            await self._write_in_order(writing)
        finally:
            for task in writing:  # after a drain-deadline give-up: they put their batch back
                with contextlib.suppress(DrainDeadlineError):
                    await task

    async def _write_in_order(self, writing: deque[asyncio.Task[None]]) -> None:
        sequence = 0
        while True:
            if not self.pending:
                if writing:
                    if not await self._finished(writing.popleft()):
                        return
                    continue
                if self.stopping.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self.stopping.is_set():
                await self._wait_for_batch()
            batch = self.pending[: self._batch_rows]
            del self.pending[: len(batch)]
            self._writes_in_flight += 1  # until _store_and_ack has acked it or put it back
            rows = self._prepare(batch)
            while len(writing) >= self._writers:
                if not await self._finished(writing.popleft()):
                    self.pending[:0] = batch
                    self._writes_in_flight -= 1
                    return
            previous = writing[-1] if writing else None
            writing.append(
                asyncio.create_task(
                    self._store_and_ack(batch, rows, slot=sequence % self._writers, after=previous),
                    name=f"batch-write-{sequence}",
                )
            )
            sequence += 1

    async def _finished(self, writing: asyncio.Task[None]) -> bool:
        """Wait for a write; False if it gave up at the drain deadline."""
        try:
            # Shielded: a cancelled writer must not cut between commit and ack.
            await asyncio.shield(writing)
        except DrainDeadlineError:
            log.warning(
                "drain deadline passed; %d messages stay unacknowledged at the broker",
                len(self.pending),
            )
            return False
        return True

    async def _wait_for_batch(self) -> None:
        deadline = self.pending[0].received_mono + self._batch_age
        while len(self.pending) < self._batch_rows and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    # --- storing --------------------------------------------------------------------

    def _prepare(self, batch: list[Received], *, count: bool = True) -> BatchRows:
        rows = BatchRows()
        decode = self.decoder.decode
        invalid = self.metrics.invalid
        # Receive times to the millisecond: one datetime serves every message of that ms.
        last_ms, received_at = -1, datetime.fromtimestamp(0, UTC)
        for message in batch:
            decoded: Decoded = decode(
                message.topic, message.payload, received_at=message.received_at
            )
            if decoded.server_topic:
                if count:
                    self.metrics.skipped.inc()
                continue
            ms = int(message.received_at * 1000)
            if ms != last_ms:
                last_ms, received_at = ms, datetime.fromtimestamp(ms / 1000, UTC)
            if decoded.fixes:
                rows.add_fixes(decoded.fixes, received_at)
            for event in decoded.events:
                rows.events.append((event, received_at))
            if decoded.rejections:
                for rejection in decoded.rejections if count else ():
                    invalid.labels(rejection.code).inc()
                    level = logging.DEBUG if rejection.code == "unsupported_type" else logging.INFO
                    log.log(level, "rejected %s: %s", message.topic, rejection.reason)
                reason = decoded.dead_letter_reason
                assert reason is not None
                rows.dead_letters.append((received_at, message.topic, message.payload, reason))
        return rows

    async def _store_and_ack(
        self,
        batch: list[Received],
        rows: BatchRows,
        *,
        slot: int,
        after: asyncio.Task[None] | None,
    ) -> None:
        started = time.monotonic()
        try:
            try:
                result = await self._write_with_retry(rows, batch, slot)
                committed = time.time()
                if after is not None:
                    await asyncio.wait([after])
                    if after.cancelled() or after.exception() is not None:
                        raise DrainDeadlineError  # acks must not overtake an unacked batch
            except DrainDeadlineError:
                self.pending[:0] = batch
                raise
            self._ack(batch)
        finally:
            self._writes_in_flight -= 1
        self._count(result, rows, batch, started, committed)

    async def _write_with_retry(
        self, rows: BatchRows, batch: list[Received], slot: int
    ) -> WriteResult:
        backoff = Backoff(base_s=0.1, cap_s=self.settings.ingest_retry_max_s)
        isolate = False
        while True:
            try:
                store = await self._connect(slot)
                if isolate:
                    return await self._write_one_by_one(store, batch)
                return await store.write(rows)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.metrics.db_errors.labels("unavailable").inc()
                await self._drop_connection(slot)
                delay = backoff.next_delay()
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning(
                    "database unavailable (%s); %d messages kept unacknowledged, retry in %.1f s",
                    first_line,
                    len(batch) + len(self.pending),
                    delay,
                )
            except psycopg.DatabaseError as exc:
                if isolate:
                    raise
                # A row the database refuses despite validation: store the rest, one message
                # at a time, and dead-letter the ones it refuses.
                self.metrics.db_errors.labels("rejected").inc()
                log.error("database rejected a batch (%s); isolating messages", exc)
                isolate = True
                continue
            if self._drain_deadline is not None and time.monotonic() + delay > self._drain_deadline:
                raise DrainDeadlineError
            await asyncio.sleep(delay)

    async def _write_one_by_one(self, store: BatchStore, batch: list[Received]) -> WriteResult:
        total = WriteResult()
        for message in batch:
            rows = self._prepare([message], count=False)
            try:
                result = await store.write(rows)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except psycopg.DatabaseError as exc:
                received_at = datetime.fromtimestamp(message.received_at, UTC)
                reason = f"database_rejected: {str(exc).strip().splitlines()[0]}"
                log.error("dead-lettering a message on %s: %s", message.topic, reason)
                self.metrics.invalid.labels("database_rejected").inc()
                result = await store.write(
                    BatchRows(dead_letters=[(received_at, message.topic, message.payload, reason)])
                )
            total.positions += result.positions
            total.duplicates += result.duplicates
            total.events += result.events
            total.dead_letters += result.dead_letters
        return total

    async def _connect(self, slot: int) -> BatchStore:
        """The store of one writer slot; each slot has its own connection."""
        store, conn = self._stores[slot], self._conns[slot]
        if store is None or conn is None or conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self.settings.dsn, autocommit=True, connect_timeout=5
            )
            store = BatchStore(conn)
            self._conns[slot], self._stores[slot] = conn, store
            log.info("connected to the database (writer %d)", slot)
        return store

    async def _drop_connection(self, slot: int) -> None:
        conn = self._conns[slot]
        self._conns[slot], self._stores[slot] = None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def _ack(self, batch: list[Received]) -> None:
        generation = self.link.generation
        connected = self.link.connected.is_set()
        mids = []
        stale = 0
        for message in batch:
            if message.qos == 0:
                continue
            if connected and message.generation == generation:
                mids.append(message.mid)
            else:
                stale += 1
        self.link.ack_many(mids)
        if stale:
            self.metrics.stale_acks.inc(stale)

    def _count(
        self,
        result: WriteResult,
        rows: BatchRows,
        batch: list[Received],
        started: float,
        committed: float,
    ) -> None:
        m = self.metrics
        m.received.inc(len(batch))
        m.stored.labels("positions").inc(result.positions)
        m.stored.labels("events").inc(result.events)
        m.duplicates.labels("positions").inc(result.duplicates)
        m.duplicates.labels("events").inc(len(rows.events) - result.events)
        m.dead_letters.inc(result.dead_letters)
        m.batch_size.observe(len(batch))
        m.commit_seconds.observe(time.monotonic() - started)
        m.receive_lag.observe(committed - batch[0].received_at)
        if rows.positions:
            newest = max(row[2] for row in rows.positions.values())
            m.fix_lag.observe(max(0.0, committed - newest.timestamp()))
        if result.used_staging:
            log.info("batch had %d already-stored fixes (redelivery)", result.duplicates)
