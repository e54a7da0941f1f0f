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
PUBLISH_QUEUE = Gauge(
    "fleetpulse_api_mqtt_queue", "Messages waiting to be published on MQTT", registry=REGISTRY
)
ETA_RECOMPUTED = Counter(
    "fleetpulse_api_eta_recomputed_total", "ETA recomputations of active orders", registry=REGISTRY
)
RETENTION_DROPPED = Counter(
    "fleetpulse_api_retention_chunks_dropped_total",
    "Position chunks dropped by retention",
    registry=REGISTRY,
)
EMERGENCIES = Counter(
    "fleetpulse_api_mqtt_emergencies_total",
    "Emergencies received over MQTT, by outcome (stored, already_stored, invalid, retried)",
    ["outcome"],
    registry=REGISTRY,
)
DELIVERY_REPORTS = Counter(
    "fleetpulse_api_mqtt_delivery_reports_total",
    "Couriers' delivery status reports over MQTT, by outcome"
    " (applied, repeat, rejected, invalid, retried)",
    ["outcome"],
    registry=REGISTRY,
)
