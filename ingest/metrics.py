"""Prometheus metrics of one ingest worker, served on settings.ingest_metrics_port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000)


class IngestMetrics:
    """Every metric on its own registry, so several workers can live in one process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "fleetpulse_ingest_messages_received", "MQTT messages received", registry=r
        )
        self.stored = Counter(
            "fleetpulse_ingest_rows_stored",
            "Rows committed, by table",
            ["table"],
            registry=r,
        )
        self.duplicates = Counter(
            "fleetpulse_ingest_duplicates",
            "Fixes and events skipped because they were already stored (redeliveries)",
            ["table"],
            registry=r,
        )
        self.invalid = Counter(
            "fleetpulse_ingest_invalid",
            "Rejected messages or batch elements, by reason code (see docs/protocol.md)",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "fleetpulse_ingest_dead_letters", "Messages stored as dead letters", registry=r
        )
        self.skipped = Counter(
            "fleetpulse_ingest_server_messages_skipped",
            "Messages on server topics (assignments, order status, alerts), not stored",
            registry=r,
        )
        self.stale_acks = Counter(
            "fleetpulse_ingest_stale_acks_skipped",
            "Acks not sent because the message came over an earlier connection",
            registry=r,
        )
        self.db_errors = Counter(
            "fleetpulse_ingest_database_errors",
            "Failed batch writes, by kind (unavailable: retried; rejected: isolated)",
            ["kind"],
            registry=r,
        )
        self.batch_size = Histogram(
            "fleetpulse_ingest_batch_messages",
            "Messages per committed batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "fleetpulse_ingest_commit_seconds",
            "Time to write and commit one batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.receive_lag = Histogram(
            "fleetpulse_ingest_receive_to_commit_seconds",
            "Per batch: from receiving its oldest message to the commit (worst case)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fix_lag = Histogram(
            "fleetpulse_ingest_fix_to_commit_seconds",
            "Per batch: from its newest fix time to the commit (freshness of the stream)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "fleetpulse_ingest_pending_messages",
            "Messages received and not yet committed (unacknowledged)",
            registry=r,
        )
        self.connected = Gauge(
            "fleetpulse_ingest_broker_connected", "1 while connected to the broker", registry=r
        )

    def serve(self, port: int, *, host: str = "127.0.0.1") -> None:
        """Start the /metrics HTTP endpoint in a daemon thread (port 0: do nothing)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
