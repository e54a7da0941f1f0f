"""Fan-out: each MQTT message to the connected clients that want it and may see it.

Who may see what is bridge.policy; the hub keeps the subscriptions it implies current as
orders change, and routes. Every admin socket gets every alert (the API's
`{prefix}/alerts/{courier_id}`, once: a phone's own emergency topic is the API's input).

Server announcements are relayed once (by `event_id`; alerts also by (alert_id, state)) and
applied to the order cache by the order's `version` (bridge.orders), never by `ts`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable

import psycopg
from psycopg_pool import PoolTimeout

from bridge.announcements import Announcements
from bridge.client import Client, FleetBatch
from bridge.metrics import BridgeMetrics
from bridge.orders import Change, Order, OrderDirectory
from bridge.policy import (
    ChannelKind,
    Forbidden,
    may_subscribe,
    owns,
    parse_channel,
    sees_status_on_courier_channel,
    snapshot_orders,
    wanted_keys,
)
from bridge.presence import PresenceTracker
from bridge.snapshots import Snapshots
from bridge.subscriptions import Key, SubscriptionManager
from bridge.topics import Topics
from protocol import frames
from protocol import server_topics as server
from protocol.decoding import MessageDecoder
from protocol.payloads import PresenceEvent
from protocol.topics import TopicError, TopicKind

log = logging.getLogger("bridge.hub")


class Hub:
    def __init__(
        self,
        *,
        topics: Topics,
        orders: OrderDirectory,
        snapshots: Snapshots,
        subscriptions: SubscriptionManager,
        metrics: BridgeMetrics,
        announcements: Announcements | None = None,
        max_future_skew_s: float = 300.0,
        subscribe_timeout_s: float = 5.0,
        presence_timeout_s: float = 120.0,
    ) -> None:
        self.topics = topics
        self.decoder = MessageDecoder(prefix=topics.prefix, max_future_skew_s=max_future_skew_s)
        self.orders = orders
        self.snapshots = snapshots
        self.subscriptions = subscriptions
        self.metrics = metrics
        self.announcements = announcements or Announcements()
        self._subscribe_timeout_s = subscribe_timeout_s
        self.clients: set[Client] = set()
        self.admins: set[Client] = set()
        self.fleet: set[Client] = set()
        # Clients per channel, and clients per courier whose positions they receive.
        self.watchers: dict[str, set[Client]] = defaultdict(set)
        self.followers: dict[str, set[Client]] = defaultdict(set)
        self.last_fix: dict[str, frames.Location] = {}
        self.presence = PresenceTracker(
            timeout_s=presence_timeout_s,
            has_active_order=lambda courier_id: bool(orders.courier_active(courier_id)),
        )
        self._catch_up: asyncio.Queue[tuple[Client, str]] = asyncio.Queue()
        self._pending_fleet: dict[str, frames.Location] = {}
        self._pending_fleet_received = 0.0

    # --- connections ------------------------------------------------------------------------
    def connected(self, client: Client) -> None:
        self.clients.add(client)
        self.metrics.connections.labels(client.role).inc()

    def authenticated(self, client: Client, previous_role: str) -> None:
        self.metrics.connections.labels(previous_role).dec()
        self.metrics.connections.labels(client.role).inc()
        if client.role == "admin":
            self.admins.add(client)

    def disconnected(self, client: Client) -> None:
        self.clients.discard(client)
        self.admins.discard(client)
        self.fleet.discard(client)
        self.metrics.connections.labels(client.role).dec()
        for channel in client.channels:
            self.watchers[channel].discard(client)
            if not self.watchers[channel]:
                del self.watchers[channel]
        client.channels.clear()
        self._apply_keys(client, set())

    # --- subscriptions ----------------------------------------------------------------------
    async def authorize(self, client: Client, kind: ChannelKind, entity_id: str | None) -> None:
        principal = client.principal
        assert principal is not None
        order = await self.orders.load(entity_id) if kind == "order" and entity_id else None
        if not may_subscribe(principal, kind, entity_id, order):
            raise Forbidden

    async def subscribe(self, client: Client, channel: str) -> None:
        """Authorize, subscribe on MQTT, then queue the confirmation and the snapshot."""
        kind, entity_id = parse_channel(channel)
        await self.authorize(client, kind, entity_id)
        if channel in client.channels:
            client.push_control(frames.SubscribedFrame(channel=channel))
            return
        client.hold += 1
        try:
            await self.orders.load_channel(kind, entity_id, refresh=False)
            client.channels.add(channel)
            self.watchers[channel].add(client)
            if kind == "fleet":
                self.fleet.add(client)
            self._recompute(client)
            await self.subscriptions.wait_active(client.keys, within_s=self._subscribe_timeout_s)
            # Anything that changed before the subscription was active is in the database.
            await self.orders.load_channel(kind, entity_id, refresh=True)
            self._recompute_all_related(kind, entity_id)
            await self.subscriptions.wait_active(client.keys, within_s=self._subscribe_timeout_s)
            snapshot = await self._snapshot(channel, kind, entity_id)
            client.push_control(frames.SubscribedFrame(channel=channel))
            client.push_control(snapshot)
        finally:
            client.hold -= 1
            client.wake()

    async def refresh_snapshots(self, client: Client) -> None:
        """A fresh snapshot of each of the client's channels, ahead of its live data."""
        client.hold += 1
        try:
            channels = [(channel, *parse_channel(channel)) for channel in sorted(client.channels)]
            for _, kind, entity_id in channels:
                await self.orders.load_channel(kind, entity_id, refresh=True)
            self._recompute(client)
            for channel, kind, entity_id in channels:
                client.push_control(await self._snapshot(channel, kind, entity_id))
        finally:
            client.hold -= 1
            client.wake()

    def unsubscribe(self, client: Client, channel: str) -> None:
        parse_channel(channel)
        if channel in client.channels:
            client.channels.discard(channel)
            self.watchers[channel].discard(client)
            if not self.watchers[channel]:
                del self.watchers[channel]
            if channel == "fleet":
                self.fleet.discard(client)
            self._recompute(client)
        client.push_control(frames.UnsubscribedFrame(channel=channel))

    async def _snapshot(
        self, channel: str, kind: ChannelKind, entity_id: str | None
    ) -> frames.SnapshotFrame:
        if kind == "fleet":
            return frames.SnapshotFrame(
                channel=channel,
                orders=await self.snapshots.open_orders(),
                locations=await self.snapshots.fleet_positions(self.last_fix),
                presence=await self._presence_snapshot(None),
            )
        orders = snapshot_orders(kind, entity_id, self.orders)
        couriers: set[str] = {entity_id} if kind == "courier" and entity_id is not None else set()
        couriers.update(o.courier_id for o in orders if o.active and o.courier_id)
        presence = await self._presence_snapshot([entity_id]) if kind == "courier" else []
        return frames.SnapshotFrame(
            channel=channel,
            orders=[o.summary() for o in orders],
            locations=await self.snapshots.positions(couriers, self.last_fix),
            presence=presence,
        )

    async def _presence_snapshot(
        self, couriers: list[str | None] | None
    ) -> list[frames.PresenceFrame]:
        """Presence by the one definition (store.presence), from what the database and this
        bridge know; announces what learning from the database changed."""
        ids = None if couriers is None else [c for c in couriers if c is not None]
        stored = await self.snapshots.presence(ids)
        for frame in self.presence.learn(stored.values()):
            self._announce_presence(frame, 0.0)
        active = {c: row.has_active_order for c, row in stored.items()}
        return self.presence.snapshot(ids, active)

    # --- what each client needs -------------------------------------------------------------
    def _recompute(self, client: Client) -> None:
        self._apply_keys(client, wanted_keys(client.principal, client.channels, self.orders))

    def _apply_keys(self, client: Client, wanted: set[Key]) -> None:
        before = client.keys
        gained, lost = wanted - before, before - wanted
        if not gained and not lost:
            return
        client.keys = wanted
        self.subscriptions.acquire(gained)
        self.subscriptions.release(lost)
        for family, courier_id in gained:
            if family == "location" and courier_id is not None:
                self.followers[courier_id].add(client)
                if not client.hold:
                    # A courier newly assigned while the page is open: its last known
                    # position follows as soon as the subscription is live.
                    self._catch_up.put_nowait((client, courier_id))
        for family, courier_id in lost:
            if family == "location" and courier_id is not None:
                followers = self.followers.get(courier_id)
                if followers is not None:
                    followers.discard(client)
                    if not followers:
                        del self.followers[courier_id]
                # Nothing of this courier may reach the client any more, not even if queued.
                client.drop_positions(f"courier:{courier_id}")

    def _recompute_clients(self, clients: Iterable[Client]) -> None:
        for client in list(clients):
            self._recompute(client)

    def _recompute_all_related(self, kind: str, entity_id: str | None) -> None:
        if entity_id is not None:
            self._recompute_clients(self.watchers.get(f"{kind}:{entity_id}", ()))

    def _order_changed(self, before: Order | None, after: Order | None) -> None:
        if after is None:
            return
        affected: set[Client] = set(self.watchers.get(f"order:{after.id}", ()))
        affected.update(self.watchers.get(f"restaurant:{after.restaurant_id}", ()))
        for courier_id in {before.courier_id if before else None, after.courier_id}:
            if courier_id is not None:
                affected.update(self.watchers.get(f"courier:{courier_id}", ()))
        self._recompute_clients(affected)

    def retained_orders(self) -> set[str]:
        """Orders some client's channel shows; the rest may leave the cache."""
        return {
            order.id
            for channel in self.watchers
            for order in snapshot_orders(*parse_channel(channel), self.orders)
        }

    # --- relaying ---------------------------------------------------------------------------
    async def on_message(self, topic: str, payload: bytes, received: float) -> None:
        try:
            parsed = self.decoder.parse_topic(topic)
        except TopicError as exc:
            self.metrics.mqtt_invalid.labels(exc.code).inc()
            return
        kind = parsed.kind
        self.metrics.mqtt_messages.labels(kind.value).inc()
        try:
            if parsed.from_device:
                self._relay_device(topic, payload, received)
            elif kind is TopicKind.ORDER_STATUS:
                await self._relay_status(server.decode_status(parsed.entity_id, payload), received)
            elif kind is TopicKind.ASSIGNMENTS:
                message = server.decode_assignment(parsed.entity_id, payload)
                await self._relay_assignment(message, received)
            elif kind is TopicKind.ALERTS:
                alert = server.decode_alert(parsed.entity_id, payload)
                self._relay_alert(frames.emergency_frame(alert), alert.event_id, received)
        except server.InvalidServerMessage as exc:
            self.metrics.mqtt_invalid.labels(exc.reason).inc()
            log.debug("not relayed: %s on %s", exc, topic)
        except Exception:
            # One message never stops the relay of the others.
            self.metrics.mqtt_invalid.labels("internal_error").inc()
            log.exception("relaying a message on %s failed", topic)

    def _relay_device(self, topic: str, payload: bytes, received: float) -> None:
        # The same validation as ingest: the bridge relays exactly what gets stored.
        decoded = self.decoder.decode(topic, payload, received_at=time.time())
        for rejection in decoded.rejections:
            self.metrics.mqtt_invalid.labels(rejection.code).inc()
        if decoded.fixes:
            newest = max(decoded.fixes, key=lambda fix: fix.fix_time)
            self._relay_fix(frames.location(newest), received)
        for event in decoded.events:
            if isinstance(event, PresenceEvent):
                self._relay_presence(event, received)
            # A courier's delivery report is relayed once the workflow applied it (order
            # status topic), an emergency once the API stored it as an alert (alerts topic);
            # geofence transitions are not part of the browser protocol.

    def _relay_fix(self, fix: frames.Location, received: float) -> None:
        key = fix.key
        last = self.last_fix.get(key)
        if last is not None and fix.ts <= last.ts:
            # A duplicate (overlapping subscriptions) or an old buffered fix: not live news.
            self.metrics.dropped.labels("stale_position").inc()
            return
        self.last_fix[key] = fix
        if fix.kind == "courier" and (back := self.presence.on_fix(fix.id, fix.ts)):
            self._announce_presence(back, received)
        if self.fleet:
            if not self._pending_fleet:
                self._pending_fleet_received = received
            elif key in self._pending_fleet:
                self.metrics.coalesced.inc()
            self._pending_fleet[key] = fix
        if fix.kind == "courier":
            followers = self.followers.get(fix.id)
            if followers:
                frame = frames.encode_frame(frames.location_frame(fix))
                for client in followers:
                    client.push_position(key, frame, received)

    def flush_fleet(self) -> None:
        """Send the firehose's pending positions as one `locations` frame to every admin."""
        if not self._pending_fleet:
            return
        items = self._pending_fleet
        self._pending_fleet = {}
        if not self.fleet:
            return
        frame = frames.encode_frame(frames.LocationsFrame(items=list(items.values())))
        batch = FleetBatch(items, frame, self._pending_fleet_received)
        for client in self.fleet:
            client.push_fleet(batch)

    def _push(self, clients: Iterable[Client], frame: frames.EventFrame, received: float) -> None:
        text = frames.encode_frame(frame)  # once, whatever the number of sockets
        for client in clients:
            client.push_event(text, received)

    def _relay_presence(self, event: PresenceEvent, received: float) -> None:
        # By arrival: the newest message wins whatever its ts (a will is older than the
        # `online` it follows); a repeat of the current one is no news.
        announced = self.presence.on_presence(event.courier_id, event.state, event.time.timestamp())
        if announced is not None:
            self._announce_presence(announced, received)

    def _announce_presence(self, frame: frames.PresenceFrame, received: float) -> None:
        recipients = self.fleet | self.watchers.get(f"courier:{frame.id}", set())
        if recipients:
            self._push(recipients, frame, received)

    def _repeated(self, kind: str, event_id: int | None) -> bool:
        if self.announcements.repeated(event_id):
            self.metrics.announcements_skipped.labels(kind, "repeat").inc()
            return True
        return False

    def _relay_alert(
        self, alert: frames.EmergencyFrame, event_id: int | None, received: float
    ) -> None:
        announcements = self.announcements
        if self._repeated("alert", event_id):
            return
        if announcements.alert_repeated(alert.alert_id, alert.state):
            self.metrics.announcements_skipped.labels("alert", "repeat").inc()
        elif self.admins:
            # Every admin socket, subscribed to anything or not.
            self._push(self.admins, alert, received)
        announcements.relayed(event_id)
        announcements.alert_relayed(alert.alert_id, alert.state)

    async def _reload(self, order_id: str) -> Change:
        try:
            return await self.orders.reload(order_id)
        except (psycopg.Error, PoolTimeout) as exc:
            self.metrics.order_reload_failures.inc()
            log.warning("order %s not reloaded (%s); relaying from the cache", order_id, exc)
            return None, self.orders.get(order_id)

    async def _relay_assignment(self, message: server.AssignmentMessage, received: float) -> None:
        if self._repeated("assignment", message.event_id):
            return
        event = frames.assignment_frame(message)
        courier_channel = f"courier:{event.courier_id}"
        known = self.orders.get(event.order)
        if known is None:
            # A new order for a watched courier: learn it, so its status reaches them.
            reload = bool(self.watchers.get(courier_channel))
        else:
            # The change's status announcement carries the full state, but may go to a
            # filter this bridge does not hold: the database has it at this version.
            reload = event.version is None or event.version > known.version
        if reload:
            self._order_changed(*await self._reload(event.order))
        recipients = self.fleet | self.watchers.get(courier_channel, set())
        if recipients:
            self._push(recipients, event, received)
        self.announcements.relayed(message.event_id)

    def _stale(self, event: frames.StatusFrame) -> bool:
        """Older than the order's version the bridge knows: superseded, never relayed."""
        if event.version is None:
            return False
        cached = self.orders.get(event.order)
        known = max(
            cached.version if cached is not None else 0,
            self.announcements.status_version(event.order) or 0,
        )
        return event.version < known

    async def _relay_status(self, message: server.OrderStatusMessage, received: float) -> None:
        order_id = message.order_id
        if self._repeated("status", message.event_id):
            return
        event = frames.status_frame(message)
        if self._stale(event):
            self.metrics.announcements_skipped.labels("status", "stale").inc()
            self.announcements.relayed(message.event_id)
            return
        change: Change | None = self.orders.apply_status(event)
        if change is None:
            cached = self.orders.get(order_id)
            if cached is not None and event.version is None:
                # No version to order it by: the database's row has one.
                change = await self._reload(order_id)
            elif cached is None and self.watchers.get(f"restaurant:{message.restaurant_id}"):
                # A new order of a watched restaurant.
                change = await self._reload(order_id)
        if change is not None:
            # Positions a socket may no longer see stop here, queued ones included,
            # before the status frame is queued behind them.
            self._order_changed(*change)
        order = self.orders.get(order_id)
        recipients = set(self.fleet)
        order_watchers = self.watchers.get(f"order:{order_id}", set())
        if order is not None:
            # A courier's order:<id> ends with a reassignment to someone else.
            order_watchers = {c for c in order_watchers if owns(c.principal, order)}
        recipients.update(order_watchers)
        recipients.update(self.watchers.get(f"restaurant:{message.restaurant_id}", ()))
        courier_id = order.courier_id if order is not None else event.courier_id
        if courier_id is not None:
            recipients.update(
                c
                for c in self.watchers.get(f"courier:{courier_id}", ())
                if sees_status_on_courier_channel(c.principal, courier_id)
            )
        if recipients:
            self._push(recipients, event, received)
        self.announcements.relayed(message.event_id)
        self.announcements.status_relayed(order_id, event.version)

    # --- background duties ------------------------------------------------------------------
    async def run_fleet_batcher(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.flush_fleet()

    async def run_catch_up(self) -> None:
        """Send a client that starts following a courier mid-stream its last known position."""
        while True:
            client, courier_id = await self._catch_up.get()
            key: Key = ("location", courier_id)
            await self.subscriptions.wait_active([key], within_s=self._subscribe_timeout_s)
            if client not in self.followers.get(courier_id, ()):
                continue
            try:
                items = await self.snapshots.positions([courier_id], self.last_fix)
            except Exception:
                log.exception("last position of %s unavailable", courier_id)
                continue
            for item in items:
                if client in self.followers.get(courier_id, ()):
                    frame = frames.encode_frame(frames.location_frame(item))
                    client.push_position(item.key, frame, 0.0)

    async def run_presence_timeouts(self, interval_s: float) -> None:
        """Announce `offline` for the couriers silent for the presence timeout."""
        while True:
            await asyncio.sleep(interval_s)
            for frame in self.presence.expire():
                self._announce_presence(frame, 0.0)

    async def run_cache_sweeper(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            started = time.monotonic()
            self.orders.evict(self.retained_orders())
            log.debug("order cache swept in %.1f ms", (time.monotonic() - started) * 1000)
