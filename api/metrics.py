"""Prometheus metrics of the API, in their own registry, served at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "fleetpulse_api_requests_total",
    "HTTP requests by route template, method and status code",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "fleetpulse_api_request_seconds",
    "HTTP request latency by route template",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
ERRORS = Counter(
    "fleetpulse_api_errors_total", "Error responses by error code", ["code"], registry=REGISTRY
)
PUBLISHED = Counter(
    "fleetpulse_api_mqtt_published_total",
    "Messages the API published on MQTT, by kind",
    ["kind"],
    registry=REGISTRY,
)
PUBLISH_FAILURES = Counter(
    "fleetpulse_api_mqtt_publish_failures_total",
    "MQTT publishes that failed and were retried",
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "fleetpulse_api_outbox_backlog",
    "Announcements in the outbox batch being relayed (0: the outbox is empty)",
    registry=REGISTRY,
)
ETA_RECOMPUTED = Counter(
    "fleetpulse_api_eta_recomputed_total", "ETA recomputations of active orders", registry=REGISTRY
)
RETENTION_DROPPED = Counter(
    "fleetpulse_api_retention_chunks_dropped_total",
    "Position chunks dropped by retention",
    registry=REGISTRY,
)
DEVICE_REPORTS = Counter(
    "fleetpulse_api_device_reports_total",
    "Couriers' MQTT reports (kind: status, emergency) taken from the device_reports inbox, by"
    " outcome: applied, repeat, rejected, failed (dead-lettered with its reason), deferred"
    " (waits for the report before it), retried (database unavailable)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
