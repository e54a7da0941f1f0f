"""Each courier's presence as the bridge knows it, by arrival, with the same timeout and the
same definition of online as the API (store.presence).

A presence message replaces the previous one when it arrives, whatever its `ts` (a will is
older than the `online` it follows). A courier from whom nothing (presence or fix) arrived
for the timeout is announced `offline`; a fix arriving after an `offline` announces them back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from protocol.frames import PresenceFrame
from store.presence import Availability, CourierPresence, availability


def _at(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


@dataclass(slots=True)
class Heard:
    """One courier: the newest presence message by arrival and the newest fix's arrival
    (epoch seconds), and the state last announced to the sockets."""

    state: str | None = None
    ts: float | None = None  # the presence message's own time
    presence_arrival: float | None = None
    fix_arrival: float | None = None
    announced: Availability | None = None

    @property
    def last_heard(self) -> float | None:
        heard = [t for t in (self.presence_arrival, self.fix_arrival) if t is not None]
        return max(heard) if heard else None

    def availability(self, *, has_active_order: bool, now: float, timeout_s: float) -> Availability:
        return availability(
            presence_state=self.state,
            presence_received=_at(self.presence_arrival),
            fix_received=_at(self.fix_arrival),
            has_active_order=has_active_order,
            now=datetime.fromtimestamp(now, UTC),
            timeout_s=timeout_s,
        )


def presence_item(courier_id: str, state: Availability, ts: float | None) -> PresenceFrame:
    return PresenceFrame(id=courier_id, state=state, ts=ts)


class PresenceTracker:
    """`has_active_order(courier_id)` answers from what the bridge knows of orders."""

    def __init__(self, *, timeout_s: float, has_active_order: Callable[[str], bool]) -> None:
        self.timeout_s = timeout_s
        self._has_active_order = has_active_order
        self.couriers: dict[str, Heard] = {}

    def _derive(self, courier_id: str, heard: Heard, now: float) -> Availability:
        return heard.availability(
            has_active_order=self._has_active_order(courier_id), now=now, timeout_s=self.timeout_s
        )

    def on_presence(
        self, courier_id: str, state: str, ts: float, *, arrival: float | None = None
    ) -> PresenceFrame | None:
        """A presence message arrived: the frame to relay, or None for a repeat of the
        current one (overlapping subscriptions, a retained copy on a new subscription)."""
        arrival = time.time() if arrival is None else arrival
        heard = self.couriers.setdefault(courier_id, Heard())
        if heard.state == state and heard.ts == ts:
            return None
        heard.state, heard.ts, heard.presence_arrival = state, ts, arrival
        heard.announced = self._derive(courier_id, heard, arrival)
        return presence_item(courier_id, heard.announced, ts)

    def on_fix(
        self, courier_id: str, fix_ts: float, *, arrival: float | None = None
    ) -> PresenceFrame | None:
        """A courier's fix arrived: a frame if that brings them back from offline."""
        arrival = time.time() if arrival is None else arrival
        heard = self.couriers.setdefault(courier_id, Heard())
        heard.fix_arrival = arrival
        if heard.announced is None:
            # Heard of by fixes alone: nothing to announce, but the timeout now applies.
            heard.announced = self._derive(courier_id, heard, arrival)
            return None
        if heard.announced != "offline":
            return None
        state = self._derive(courier_id, heard, arrival)
        if state == "offline":
            return None
        heard.announced = state
        return presence_item(courier_id, state, fix_ts)

    def expire(self, now: float | None = None) -> list[PresenceFrame]:
        """`offline` frames for the couriers the timeout has just made offline."""
        now = time.time() if now is None else now
        deadline = now - self.timeout_s
        frames: list[PresenceFrame] = []
        for courier_id, heard in self.couriers.items():
            if heard.announced in (None, "offline"):
                continue
            last = heard.last_heard
            if last is not None and last >= deadline:
                continue
            heard.announced = "offline"
            frames.append(
                presence_item(
                    courier_id, "offline", None if last is None else last + self.timeout_s
                )
            )
        return frames

    def learn(
        self, stored: Iterable[CourierPresence], now: float | None = None
    ) -> list[PresenceFrame]:
        """Merge what the database knows (ingest saw what this bridge may have missed, and
        knows when a retained message first arrived). Returns the frames for couriers whose
        announced state this changes."""
        now = time.time() if now is None else now
        frames: list[PresenceFrame] = []
        for row in stored:
            heard = self.couriers.setdefault(row.courier_id, Heard())
            before = heard.announced
            if row.presence_received is not None and row.presence_ts is not None:
                arrival, ts = row.presence_received.timestamp(), row.presence_ts.timestamp()
                if heard.state == row.presence_state and heard.ts == ts:
                    # The same message: it arrived when it first arrived.
                    heard.presence_arrival = min(arrival, heard.presence_arrival or arrival)
                elif heard.presence_arrival is None or arrival > heard.presence_arrival:
                    heard.state, heard.ts, heard.presence_arrival = row.presence_state, ts, arrival
            if row.fix_received is not None:
                fix_arrival = row.fix_received.timestamp()
                if heard.fix_arrival is None or fix_arrival > heard.fix_arrival:
                    heard.fix_arrival = fix_arrival
            if heard.last_heard is None:
                continue
            heard.announced = self._derive(row.courier_id, heard, now)
            if before is not None and (before == "offline") != (heard.announced == "offline"):
                frames.append(self.item(row.courier_id, heard, heard.announced, now))
        return frames

    def item(self, courier_id: str, heard: Heard, state: Availability, now: float) -> PresenceFrame:
        """A snapshot's entry: `ts` is the presence message's when the state is what it said,
        else when the bridge's reading of it took effect."""
        if state == heard.state or (state == "busy" and heard.state == "online"):
            return presence_item(courier_id, state, heard.ts)
        last = heard.last_heard
        if state == "offline" and last is not None and now - last > self.timeout_s:
            return presence_item(courier_id, state, last + self.timeout_s)
        return presence_item(courier_id, state, heard.ts if last is None else last)

    def snapshot(
        self,
        courier_ids: Collection[str] | None,
        active: Mapping[str, bool],
        now: float | None = None,
    ) -> list[PresenceFrame]:
        """The state of each courier heard of (the given ones, or all), by the definition
        of store.presence; `active` says who has an active order (from the database)."""
        now = time.time() if now is None else now
        ids = self.couriers.keys() if courier_ids is None else courier_ids
        items: list[PresenceFrame] = []
        for courier_id in ids:
            heard = self.couriers.get(courier_id)
            if heard is None or heard.last_heard is None:
                continue
            has_active = active.get(courier_id, False) or self._has_active_order(courier_id)
            state = heard.availability(
                has_active_order=has_active, now=now, timeout_s=self.timeout_s
            )
            items.append(self.item(courier_id, heard, state, now))
        return items
