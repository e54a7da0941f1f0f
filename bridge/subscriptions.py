"""Reference-counted MQTT subscriptions: the bridge subscribes only to what its clients need.

A key is (family, id): id None is the family's wildcard (the admin firehose), which covers
every specific key of that family, so no message arrives twice. Keys whose count drops to
zero linger a few seconds before the UNSUBSCRIBE, so a page reload does not churn the broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable

import aiomqtt

from bridge.metrics import BridgeMetrics
from bridge.topics import FAMILIES, Family, Topics

log = logging.getLogger("bridge.subscriptions")

Key = tuple[Family, str | None]
# Filters per SUBSCRIBE / UNSUBSCRIBE packet.
_CHUNK = 200


class SubscriptionManager:
    def __init__(self, *, topics: Topics, metrics: BridgeMetrics, linger_s: float) -> None:
        self._topics = topics
        self._metrics = metrics
        self._linger_s = linger_s
        self._refs: Counter[Key] = Counter()
        self._released: dict[Key, float] = {}
        self._active: set[str] = set()
        self._client: aiomqtt.Client | None = None
        self._changed = asyncio.Event()
        self._settled = asyncio.Condition()

    # --- reference counting (synchronous: called from the relay and the sessions) ---------
    def acquire(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self._refs[key] += 1
            self._released.pop(key, None)
        self._changed.set()

    def release(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self._refs[key] -= 1
            if self._refs[key] <= 0:
                del self._refs[key]
                self._released[key] = time.monotonic()
        self._changed.set()

    def desired(self) -> set[str]:
        now = time.monotonic()
        for key, released in list(self._released.items()):
            if now - released >= self._linger_s:
                del self._released[key]
        wanted: set[str] = set(self._topics.always())
        live = set(self._refs) | set(self._released)
        for family in FAMILIES:
            if (family, None) in live:
                wanted.update(self._topics.filters(family, None))
        for family, entity_id in live:
            if entity_id is not None and (family, None) not in live:
                wanted.update(self._topics.filters(family, entity_id))
        return wanted

    def _covered(self, key: Key) -> bool:
        family, entity_id = key
        wildcard = self._topics.filters(family, None)
        if all(f in self._active for f in wildcard):
            return True
        return entity_id is not None and all(
            f in self._active for f in self._topics.filters(family, entity_id)
        )

    async def wait_active(self, keys: Iterable[Key], *, within_s: float) -> bool:
        """Wait until every key's filters are subscribed on the broker; False on timeout."""
        pending = list(keys)
        async with self._settled:
            try:
                async with asyncio.timeout(within_s):
                    await self._settled.wait_for(lambda: all(map(self._covered, pending)))
            except TimeoutError:
                return False
        return True

    # --- the connection side ---------------------------------------------------------------
    def attach(self, client: aiomqtt.Client) -> None:
        """A new (clean) connection: nothing is subscribed on it yet."""
        self._client = client
        self._active = set()
        self._changed.set()

    def detach(self) -> None:
        self._client = None
        self._active = set()
        self._metrics.mqtt_filters.set(0)

    async def run(self) -> None:
        """Reconcile the broker's subscriptions with the wanted set, batching changes."""
        while True:
            lingering = bool(self._released)
            try:
                async with asyncio.timeout(self._linger_s / 2 if lingering else None):
                    await self._changed.wait()
            except TimeoutError:
                pass
            self._changed.clear()
            client = self._client
            if client is None:
                continue
            try:
                await self._reconcile(client)
            except aiomqtt.MqttError as exc:
                # The connection loop notices too and reattaches; try again then.
                log.warning("subscription change failed (%s); retrying on reconnect", exc)

    async def _reconcile(self, client: aiomqtt.Client) -> None:
        wanted = self.desired()
        # Subscribe first, unsubscribe after: a key moving between its wildcard and its
        # specific filter never has a gap.
        new = sorted(wanted - self._active)
        for start in range(0, len(new), _CHUNK):
            chunk = new[start : start + _CHUNK]
            await client.subscribe([(f, self._qos(f)) for f in chunk])
            if client is not self._client:
                return
            self._active.update(chunk)
            self._metrics.mqtt_filters.set(len(self._active))
            async with self._settled:
                self._settled.notify_all()
        gone = sorted(self._active - self.desired())
        for start in range(0, len(gone), _CHUNK):
            chunk = gone[start : start + _CHUNK]
            await client.unsubscribe(chunk)
            if client is not self._client:
                return
            self._active.difference_update(chunk)
            self._metrics.mqtt_filters.set(len(self._active))

    def _qos(self, topic_filter: str) -> int:
        # Positions are superseded within seconds: QoS 0 spares the acknowledgements. Events
        # that are never dropped are taken at QoS 1.
        positional = topic_filter.endswith("/location") or topic_filter.startswith("owntracks/")
        return 0 if positional else 1
