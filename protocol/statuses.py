"""The order status values: the one definition that the API, the workflow, the bridge, the
database queries and the wire contract use.

`pending` -> `assigned` -> `picked_up` -> `out_for_delivery` -> `delivered`; `cancelled` from
any state before `delivered`. A courier reports only :data:`DeliveryStatus` values.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal


class Status(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    PICKED_UP = "picked_up"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


#: What a courier's phone may report on its delivery status topic.
DeliveryStatus = Literal["picked_up", "out_for_delivery", "delivered"]

ORDER_STATUSES: Final = frozenset(Status)
#: A courier is on the way: the order's sockets see the courier's position.
ACTIVE: Final = frozenset({Status.ASSIGNED, Status.PICKED_UP, Status.OUT_FOR_DELIVERY})
#: Finished: nothing changes any more, and no position is shown.
TERMINAL: Final = frozenset({Status.DELIVERED, Status.CANCELLED})
#: An order may get (another) courier until it is finished.
ASSIGNABLE: Final = frozenset({Status.PENDING, *ACTIVE})

#: For queries: ``status = ANY(%s)`` with this list as the parameter.
ACTIVE_LIST: Final = sorted(str(s) for s in ACTIVE)
#: For queries: ``status <> ALL(%s)`` (not finished) with this list as the parameter.
TERMINAL_LIST: Final = sorted(str(s) for s in TERMINAL)
