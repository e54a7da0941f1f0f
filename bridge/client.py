"""One browser connection's outgoing queue: bounded, coalescing, never blocking the relay.

The relay pushes frames without awaiting; each connection's own sender task writes them. The
order of writing is: control frames (confirmations, snapshots, errors, pongs), then events that
are never dropped (status, assignment, emergency, presence), then the admin firehose batches,
then positions, of which only the newest per source is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from auth import Principal
from bridge.metrics import BridgeMetrics
from bridge.subscriptions import Key
from protocol.frames import Frame, Location, LocationsFrame, encode_frame

# A frame waiting to go out, with the monotonic time its MQTT message arrived (0: none).
Queued = tuple[str, float]

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SLOW_CONSUMER = 4408


@dataclass(slots=True)
class FleetBatch:
    """One `locations` frame shared by every firehose subscriber."""

    items: dict[str, Location]
    frame: str
    received: float


@dataclass(slots=True)
class ClientLimits:
    # Never-dropped events waiting for one client before it is closed with 4408.
    event_queue: int = 2000
    # Unsent firehose batches before they are merged into one (newest fix per source).
    fleet_backlog: int = 10


@dataclass(eq=False)
class Client:
    send: Callable[[str], Awaitable[None]]
    metrics: BridgeMetrics
    limits: ClientLimits = field(default_factory=ClientLimits)
    principal: Principal | None = None
    # Channels the client subscribed to, e.g. "fleet", "order:o1".
    channels: set[str] = field(default_factory=set)
    # MQTT subscription keys this client holds (owned by the hub).
    keys: set[Key] = field(default_factory=set)
    forbidden: int = 0
    close_code: int | None = None
    close_reason: str = ""
    # While > 0 a subscribe is building its snapshot: only control frames go out, so the
    # confirmation and snapshot precede the live events of that channel.
    hold: int = 0
    # True from a token's expiry until a fresh `auth`: only control frames go out, and data
    # pushed meanwhile is dropped (the fresh auth brings new snapshots).
    suspended: bool = False
    _control: deque[str] = field(default_factory=deque)
    _events: deque[Queued] = field(default_factory=deque)
    _fleet: list[FleetBatch] = field(default_factory=list)
    _positions: dict[str, Queued] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _abort: Callable[[], None] | None = None

    @property
    def role(self) -> str:
        return self.principal.role if self.principal else "unauthenticated"

    def set_abort(self, abort: Callable[[], None] | None) -> None:
        self._abort = abort

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to close with `code`; its tasks are cancelled at once."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self.metrics.closed.labels(reason).inc()
        if self._abort is not None:
            self._abort()

    def push_control(self, frame: Frame) -> None:
        self._control.append(encode_frame(frame))
        self._wake.set()

    def suspend(self) -> None:
        """The token expired: stop sending data, queued data included, until resume()."""
        self.suspended = True
        queued = len(self._events) + len(self._positions) + sum(len(b.items) for b in self._fleet)
        if queued:
            self.metrics.dropped.labels("reauth_pending").inc(queued)
        self._events.clear()
        self._positions.clear()
        self._fleet.clear()

    def resume(self) -> None:
        self.suspended = False

    def _refused_while_suspended(self, frames: int = 1) -> bool:
        if self.suspended:
            self.metrics.dropped.labels("reauth_pending").inc(frames)
        return self.suspended

    def push_event(self, frame: str, received: float) -> None:
        if self._refused_while_suspended():
            return
        if len(self._events) >= self.limits.event_queue:
            self.metrics.dropped.labels("slow_consumer").inc(len(self._events))
            self._events.clear()
            self.close(CLOSE_SLOW_CONSUMER, "slow_consumer")
            return
        self._events.append((frame, received))
        self._wake.set()

    def push_position(self, key: str, frame: str, received: float) -> None:
        if self._refused_while_suspended():
            return
        positions = self._positions
        if key in positions:
            self.metrics.coalesced.inc()
        positions[key] = (frame, received)
        self._wake.set()

    def drop_positions(self, key: str) -> None:
        """Forget a queued position of a source the client may no longer see."""
        self._positions.pop(key, None)

    def push_fleet(self, batch: FleetBatch) -> None:
        if self._refused_while_suspended(len(batch.items)):
            return
        fleet = self._fleet
        fleet.append(batch)
        if len(fleet) > self.limits.fleet_backlog:
            merged: dict[str, Location] = {}
            for pending in fleet:
                merged.update(pending.items)
            replaced = sum(len(pending.items) for pending in fleet) - len(merged)
            self.metrics.coalesced.inc(replaced)
            frame = encode_frame(LocationsFrame(items=list(merged.values())))
            self._fleet = [FleetBatch(merged, frame, fleet[0].received)]
        self._wake.set()

    def take_control(self) -> list[str]:
        """The control frames still queued (the error that explains a close)."""
        frames = list(self._control)
        self._control.clear()
        return frames

    def pending(self) -> int:
        return len(self._control) + len(self._events) + len(self._fleet) + len(self._positions)

    def _next(self) -> Queued | None:
        if self._control:
            return self._control.popleft(), 0.0
        if self.hold:
            return None
        if self._events:
            return self._events.popleft()
        if self._fleet:
            batch = self._fleet.pop(0)
            return batch.frame, batch.received
        if self._positions:
            key = next(iter(self._positions))
            return self._positions.pop(key)
        return None

    def wake(self) -> None:
        self._wake.set()

    async def run_sender(self) -> None:
        frames_out = self.metrics.frames_out
        latency = self.metrics.relay_latency
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (queued := self._next()) is not None:
                frame, received = queued
                await self.send(frame)
                frames_out.inc()
                if received:
                    latency.observe(time.monotonic() - received)
