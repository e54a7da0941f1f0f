"""Whether a courier is online, offline or busy: the one definition, shared by the API and
the bridge (docs/api.md, "Availability").

Presence is ordered by arrival (`received_at`), never by the device's `ts`: a phone's MQTT
will carries the `ts` of when it was set, older than the `online` the phone published after
connecting, and still has the last word when the broker publishes it later.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from protocol.payloads import PresenceState
from protocol.statuses import ACTIVE_LIST

#: What the API and the bridge say of a courier: the words a phone declares, but derived
#: from its presence, its fixes' age and its active orders (``availability`` below).
Availability = PresenceState


def last_heard(
    presence_received: datetime | None, fix_received: datetime | None
) -> datetime | None:
    """When anything (a presence message or a fix) last arrived from the courier."""
    heard = [t for t in (presence_received, fix_received) if t is not None]
    return max(heard) if heard else None


def availability(
    *,
    presence_state: str | None,
    presence_received: datetime | None,
    fix_received: datetime | None,
    has_active_order: bool,
    now: datetime,
    timeout_s: float,
) -> Availability:
    """online/offline/busy from the newest presence message by arrival and the arrival of the
    newest fix:

    - nothing heard for `timeout_s`: offline, whatever the last presence said;
    - the newest presence says `offline` and no fix arrived after it: offline (a fix that
      arrives after an `offline` means the phone is back);
    - the newest presence says `busy`, or the courier has an active order: busy;
    - otherwise online."""
    heard = last_heard(presence_received, fix_received)
    if heard is None or now - heard > timedelta(seconds=timeout_s):
        return "offline"
    back_by_fix = (
        fix_received is not None
        and presence_received is not None
        and fix_received > presence_received
    )
    if presence_state == "offline" and not back_by_fix:
        return "offline"
    if presence_state == "busy" or has_active_order:
        return "busy"
    return "online"


@dataclass(frozen=True, slots=True)
class CourierPresence:
    """What the database knows about one courier's presence."""

    courier_id: str
    presence_state: str | None  # of the newest presence message by arrival
    presence_ts: datetime | None  # that message's own time (the device's `ts`)
    presence_received: datetime | None  # when it arrived
    fix_received: datetime | None  # when the newest fix arrived
    has_active_order: bool

    @property
    def last_heard(self) -> datetime | None:
        return last_heard(self.presence_received, self.fix_received)

    def availability(self, *, now: datetime, timeout_s: float) -> Availability:
        return availability(
            presence_state=self.presence_state,
            presence_received=self.presence_received,
            fix_received=self.fix_received,
            has_active_order=self.has_active_order,
            now=now,
            timeout_s=timeout_s,
        )


# Ties on arrival (ingest keeps milliseconds) go to `offline`: a phone needs a new connection
# to come back, which takes longer than a millisecond.
PRESENCE_SQL = """
SELECT c.id AS courier_id,
       pr.state AS presence_state, pr.event_time AS presence_ts,
       pr.received_at AS presence_received,
       lp.received_at AS fix_received,
       EXISTS (SELECT 1 FROM orders o WHERE o.courier_id = c.id
               AND o.status = ANY(%s)) AS has_active_order
FROM couriers c
LEFT JOIN last_positions lp ON lp.source_kind = 'courier' AND lp.source_id = c.id
LEFT JOIN LATERAL (
    SELECT e.payload ->> 'state' AS state, e.event_time, e.received_at FROM events e
    WHERE e.kind = 'presence' AND e.source_id = c.id AND e.source_kind = 'courier'
    ORDER BY e.received_at DESC, (e.payload ->> 'state' = 'offline') DESC, e.event_time DESC
    LIMIT 1
) pr ON true
"""


def presence_query(courier_ids: Collection[str] | None = None) -> tuple[str, tuple[object, ...]]:
    """PRESENCE_SQL and its parameters, for the given couriers or all of them."""
    if courier_ids is None:
        return PRESENCE_SQL, (ACTIVE_LIST,)
    return PRESENCE_SQL + " WHERE c.id = ANY(%s)", (ACTIVE_LIST, list(courier_ids))


async def read_presence(
    conn: AsyncConnection[Any], courier_ids: Collection[str] | None = None
) -> dict[str, CourierPresence]:
    """Each courier's presence as stored, by courier id: the given couriers, or all."""
    if courier_ids is not None and not courier_ids:
        return {}
    query, params = presence_query(courier_ids)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    return {row["courier_id"]: CourierPresence(**row) for row in rows}


__all__ = [
    "PRESENCE_SQL",
    "Availability",
    "CourierPresence",
    "availability",
    "last_heard",
    "presence_query",
    "read_presence",
]
