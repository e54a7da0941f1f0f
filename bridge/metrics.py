"""Prometheus metrics of the bridge, served at /metrics on the bridge's own port."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "bridge_connections", "Open WebSocket connections by role", ["role"], registry=r
        )
        self.frames_in = Counter(
            "bridge_frames_in_total", "Frames received from browsers by type", ["type"], registry=r
        )
        self.frames_out = Counter(
            "bridge_frames_out_total", "Frames written to browsers", registry=r
        )
        self.coalesced = Counter(
            "bridge_positions_coalesced_total",
            "Queued positions replaced by a newer one of the same source before sending",
            registry=r,
        )
        self.dropped = Counter(
            "bridge_dropped_total",
            "Frames not delivered, by reason (only positions are ever coalesced away)",
            ["reason"],
            registry=r,
        )
        self.closed = Counter(
            "bridge_closed_total", "Sockets the bridge closed, by reason", ["reason"], registry=r
        )
        self.refused = Counter(
            "bridge_client_errors_total",
            "Browser frames answered with an error frame, by code",
            ["code"],
            registry=r,
        )
        self.relay_latency = Histogram(
            "bridge_relay_latency_seconds",
            "From the MQTT receive to the socket write",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.mqtt_messages = Counter(
            "bridge_mqtt_messages_total", "MQTT messages received by kind", ["kind"], registry=r
        )
        self.mqtt_invalid = Counter(
            "bridge_mqtt_invalid_total",
            "MQTT messages the bridge could not relay, by reason",
            ["reason"],
            registry=r,
        )
        self.announcements_skipped = Counter(
            "bridge_announcements_skipped_total",
            "Server messages not relayed, by kind and reason: `repeat` (an event_id or an "
            "alert state already relayed), `stale` (older than the order's known version)",
            ["kind", "reason"],
            registry=r,
        )
        self.order_reload_failures = Counter(
            "bridge_order_reload_failures_total",
            "Orders an announcement asked to read again from the database that could not be",
            registry=r,
        )
        self.mqtt_filters = Gauge(
            "bridge_mqtt_filters", "Topic filters the bridge is subscribed to", registry=r
        )
        self.gc_seconds = Counter(
            "bridge_gc_seconds_total",
            "Time spent in Python's cyclic garbage collector, by generation",
            ["generation"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "bridge_event_loop_lag_seconds",
            "How late a 100 ms timer fires: time the event loop could not run anything",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.loop_lag_max = Gauge(
            "bridge_event_loop_lag_max_seconds",
            "The largest event-loop lag since the last scrape",
            registry=r,
        )
        self.loop_lag_peak = 0.0
        self.loop_lag_max.set_function(lambda: self.loop_lag_peak)
        self.mqtt_reconnects = Counter(
            "bridge_mqtt_reconnects_total", "Connections to the broker lost", registry=r
        )

    def watch_gc(self) -> None:
        """Count the collector's pauses: with thousands of sockets they are what grows."""
        started: list[float] = [0.0]
        per_generation = [self.gc_seconds.labels(str(g)) for g in range(3)]

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                per_generation[info["generation"]].inc(time.perf_counter() - started[0])

        gc.callbacks.append(callback)


async def probe_loop_lag(metrics: BridgeMetrics, interval_s: float = 0.1) -> None:
    """Measure how late the event loop wakes a sleeper, until cancelled."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(interval_s)
        lag = time.monotonic() - started - interval_s
        metrics.loop_lag.observe(lag)
        metrics.loop_lag_peak = max(metrics.loop_lag_peak, lag)
