"""The delivery status workflow: which status may follow which, and who may move it there.

Pure rules, applied alike to REST calls and to couriers' reports over MQTT, so a
transition means the same thing whichever way it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from protocol.statuses import TERMINAL, Status

Role = Literal["admin", "courier", "customer", "restaurant"]

# Assigned -> PickedUp -> OutForDelivery -> Delivered; Cancelled from any state before
# Delivered. `pending` -> `assigned` happens only through an assignment, never a status change.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.CANCELLED}),
    Status.ASSIGNED: frozenset({Status.PICKED_UP, Status.CANCELLED}),
    Status.PICKED_UP: frozenset({Status.OUT_FOR_DELIVERY, Status.CANCELLED}),
    Status.OUT_FOR_DELIVERY: frozenset({Status.DELIVERED, Status.CANCELLED}),
    Status.DELIVERED: frozenset(),
    Status.CANCELLED: frozenset(),
}

# Order of the statuses along the happy path, for sorting and "has it passed X" questions.
_RANK = {
    Status.PENDING: 0,
    Status.ASSIGNED: 1,
    Status.PICKED_UP: 2,
    Status.OUT_FOR_DELIVERY: 3,
    Status.DELIVERED: 4,
    Status.CANCELLED: 5,
}


class TransitionError(Exception):
    """A status change the workflow does not allow; `allowed` lists what may come next."""

    def __init__(self, current: Status, target: Status, allowed: list[Status]) -> None:
        self.current = current
        self.target = target
        self.allowed = allowed
        names = ", ".join(allowed) if allowed else "none (the order is finished)"
        super().__init__(f"cannot move an order from {current} to {target}; allowed next: {names}")


class ActorNotAllowedError(Exception):
    """The actor's role may not make this change (the order itself is visible to them)."""


def allowed_next(current: Status | str) -> list[Status]:
    """The statuses that may follow `current`, in workflow order."""
    return sorted(TRANSITIONS[Status(current)], key=_RANK.__getitem__)


def allowed_next_for(current: Status | str, role: Role) -> list[Status]:
    """The statuses a role may move an order to from `current`."""
    return [s for s in allowed_next(current) if _role_may(role, Status(current), s)]


def _role_may(role: Role, current: Status, target: Status) -> bool:
    if role == "admin":
        return True
    if role == "courier":
        return target in (Status.PICKED_UP, Status.OUT_FOR_DELIVERY, Status.DELIVERED)
    if role == "restaurant":
        return target == Status.CANCELLED and current in (Status.PENDING, Status.ASSIGNED)
    return False


@dataclass(frozen=True)
class Decision:
    """What to do with a requested change: apply it, or accept it as a harmless repeat."""

    current: Status
    target: Status
    outcome: Literal["apply", "repeat"]


def decide(current: Status | str, target: Status | str, *, role: Role) -> Decision:
    """Check a requested change. Raises TransitionError or ActorNotAllowedError.

    Asking for the status the order already has is a repeat (an MQTT redelivery, a retried
    request): harmless, nothing changes. Ownership (whose order it is) is the caller's check.
    """
    now, wanted = Status(current), Status(target)
    if now == wanted and now not in (Status.PENDING,):
        if not _role_may(role, _previous_on_path(now), now) and role != "admin":
            raise ActorNotAllowedError(f"a {role} may not set an order to {wanted}")
        return Decision(now, wanted, "repeat")
    if wanted not in TRANSITIONS[now]:
        raise TransitionError(now, wanted, allowed_next(now))
    if not _role_may(role, now, wanted):
        raise ActorNotAllowedError(
            f"a {role} may not move an order from {now} to {wanted}"
            + (
                "; a restaurant may only cancel before pickup"
                if role == "restaurant" and wanted == Status.CANCELLED
                else ""
            )
        )
    return Decision(now, wanted, "apply")


def skips_ahead(current: Status | str, target: Status | str) -> bool:
    """Whether `target` lies further along the happy path than the next step: a report
    that may have overtaken the one before it (see api/reports.py)."""
    now, wanted = Status(current), Status(target)
    if now in TERMINAL or wanted == Status.CANCELLED:
        return False
    return _RANK[wanted] > _RANK[now] + 1


def _previous_on_path(status: Status) -> Status:
    if status == Status.CANCELLED:
        return Status.ASSIGNED
    for before, after in TRANSITIONS.items():
        if status in after and before != Status.PENDING:
            return before
    return Status.PENDING
