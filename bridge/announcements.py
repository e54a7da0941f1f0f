"""What the bridge already relayed of the server's announcements, in bounded memory.

The API publishes every announcement from its transactional outbox at QoS 1 with `event_id`,
the outbox row's id; a relay that crashed after the broker's PUBACK publishes the same row
again with the same id. An alert is also known by (alert_id, state), and an order's status
announcements by the order's version. Each memory keeps the most recent entries only: a
repeat comes within seconds of the original, not after tens of thousands of others.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, Generic, TypeVar

DEFAULT_CAPACITY: Final = 65_536

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class Recent(Generic[_Key, _Value]):
    """The `capacity` most recently written keys and their values; the oldest go first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._entries: OrderedDict[_Key, _Value] = OrderedDict()

    def __contains__(self, key: _Key) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _Key) -> _Value | None:
        return self._entries.get(key)

    def put(self, key: _Key, value: _Value) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


class Announcements:
    """Repeats and superseded order announcements, to be dropped before relaying."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._event_ids: Recent[int, None] = Recent(capacity)
        self._alerts: Recent[tuple[int, str], None] = Recent(capacity)
        self._status_versions: Recent[str, int] = Recent(capacity)

    def repeated(self, event_id: int | None) -> bool:
        """True if the outbox row `event_id` was relayed already (None: no id, never)."""
        return event_id is not None and event_id in self._event_ids

    def relayed(self, event_id: int | None) -> None:
        if event_id is not None:
            self._event_ids.put(event_id, None)

    def alert_repeated(self, alert_id: int, state: str) -> bool:
        return (alert_id, state) in self._alerts

    def alert_relayed(self, alert_id: int, state: str) -> None:
        self._alerts.put((alert_id, state), None)

    def status_version(self, order_id: str) -> int | None:
        """The newest version of the order whose status announcement was relayed."""
        return self._status_versions.get(order_id)

    def status_relayed(self, order_id: str, version: int | None) -> None:
        if version is not None and version > (self._status_versions.get(order_id) or 0):
            self._status_versions.put(order_id, version)
