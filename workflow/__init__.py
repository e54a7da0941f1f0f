"""The delivery workflow: status rules, transitions and ETA. The API applies it (REST calls
and couriers' MQTT reports from the inbox); its queries are store.orders'."""

from protocol.statuses import ACTIVE, ASSIGNABLE, TERMINAL, Status
from workflow.eta import EtaParameters, Fix, estimate_arrival, haversine_m
from workflow.orders import (
    Actor,
    OrderNotFoundError,
    StatusChange,
    apply_status,
    compute_eta,
)
from workflow.rules import (
    TRANSITIONS,
    ActorNotAllowedError,
    Decision,
    TransitionError,
    allowed_next,
    allowed_next_for,
    decide,
    skips_ahead,
)

__all__ = [
    "ACTIVE",
    "ASSIGNABLE",
    "TERMINAL",
    "TRANSITIONS",
    "Actor",
    "ActorNotAllowedError",
    "Decision",
    "EtaParameters",
    "Fix",
    "OrderNotFoundError",
    "Status",
    "StatusChange",
    "TransitionError",
    "allowed_next",
    "allowed_next_for",
    "apply_status",
    "compute_eta",
    "decide",
    "estimate_arrival",
    "haversine_m",
    "skips_ahead",
]
