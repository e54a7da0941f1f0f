"""Who may publish and read what: the dynamic-security roles of services and devices.

Mosquitto 2.0.11's dynamic-security plugin does not substitute %c or %u in ACL topics, so
every device gets a role of its own, named after its username. Reads are denied by default
(defaultACLAccess publishClientReceive false), so each role lists what it may receive.
In an ACL check the entry with the highest priority that matches decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from broker.accounts import ServiceAccount

AclType = Literal[
    "publishClientSend",
    "publishClientReceive",
    "subscribeLiteral",
    "subscribePattern",
    "unsubscribeLiteral",
    "unsubscribePattern",
]
OWNTRACKS_ROOT = "owntracks"
# Deny entries outrank the allows they carve holes into.
DENY_PRIORITY = 10

DEFAULT_ACL_ACCESS: dict[str, bool] = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}


class DeviceKind(StrEnum):
    COURIER = "courier"
    VEHICLE = "vehicle"


@dataclass(frozen=True, order=True)
class Acl:
    acltype: AclType
    topic: str
    allow: bool = True
    priority: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }


def device_username(kind: DeviceKind, owner_id: str) -> str:
    """`courier.c-42`: ids never contain a dot, so the kind and id can always be told apart."""
    return f"{kind.value}.{owner_id}"


def device_role(username: str) -> str:
    return f"device.{username}"


def server_topic_filters(prefix: str) -> tuple[str, ...]:
    """The topics only servers publish (docs/protocol.md)."""
    return (f"{prefix}/couriers/+/assignments/#", f"{prefix}/orders/#", f"{prefix}/alerts/#")


def device_publish_topics(kind: DeviceKind, owner_id: str, prefix: str) -> tuple[str, ...]:
    if kind is DeviceKind.COURIER:
        return (f"{prefix}/couriers/{owner_id}/#", f"{OWNTRACKS_ROOT}/{owner_id}/#")
    return (f"{prefix}/vehicles/{owner_id}/#",)


def device_subscribe_topics(kind: DeviceKind, owner_id: str, prefix: str) -> tuple[str, ...]:
    if kind is DeviceKind.COURIER:
        return (f"{prefix}/couriers/{owner_id}/assignments",)
    return ()


def device_acls(kind: DeviceKind, owner_id: str, prefix: str) -> list[Acl]:
    """Publish under its own subtrees, read only its own assignments, never forge them."""
    acls = [Acl("publishClientSend", t) for t in device_publish_topics(kind, owner_id, prefix)]
    if kind is DeviceKind.COURIER:
        acls.append(
            Acl(
                "publishClientSend",
                f"{prefix}/couriers/{owner_id}/assignments/#",
                allow=False,
                priority=DENY_PRIORITY,
            )
        )
    for topic in device_subscribe_topics(kind, owner_id, prefix):
        acls.append(Acl("subscribeLiteral", topic))
        acls.append(Acl("publishClientReceive", topic))
    return acls


def _read(topic: str, *, shared_group: str | None = None) -> list[Acl]:
    acls = [Acl("subscribePattern", topic), Acl("publishClientReceive", topic)]
    if shared_group is not None:
        acls.append(Acl("subscribePattern", f"$share/{shared_group}/{topic}"))
    return acls


def service_acls(account: ServiceAccount, *, prefix: str) -> list[Acl]:
    if account == "admin":
        control = "$CONTROL/dynamic-security/#"
        return [
            Acl("publishClientSend", control),
            *_read(control),
            *_read("$SYS/#"),
        ]
    if account == "ingest":
        # Everything devices publish, so a misspelt topic becomes a dead letter rather than
        # vanishing; the server topics are no business of ingest. Any shared group: workers
        # of separate deployments (or tests) on one broker must not steal each other's work.
        acls = [
            *_read(f"{prefix}/#", shared_group="+"),
            *_read(f"{OWNTRACKS_ROOT}/#", shared_group="+"),
        ]
        acls += [
            Acl("publishClientReceive", topic, allow=False, priority=DENY_PRIORITY)
            for topic in server_topic_filters(prefix)
        ]
        return acls
    if account == "bridge":
        # Relays positions, presence, assignments, order status and alerts to browsers.
        return [*_read(f"{prefix}/#"), *_read(f"{OWNTRACKS_ROOT}/#")]
    if account == "api":
        # Publishes the server topics; reads the courier reports it acts on (delivery status,
        # emergencies, presence, fixes for the ETA), shared between several api instances.
        return [
            Acl("publishClientSend", f"{prefix}/couriers/+/assignments"),
            Acl("publishClientSend", f"{prefix}/orders/+/status"),
            Acl("publishClientSend", f"{prefix}/alerts/+"),
            *_read(f"{prefix}/couriers/#", shared_group="+"),
            *_read(f"{OWNTRACKS_ROOT}/#", shared_group="+"),
        ]
    if account == "loadgen":
        # Local only: publishes as any device, for tests and benchmarks.
        return [
            Acl("publishClientSend", f"{prefix}/#"),
            Acl("publishClientSend", f"{OWNTRACKS_ROOT}/#"),
            *[
                Acl("publishClientSend", topic, allow=False, priority=DENY_PRIORITY)
                for topic in server_topic_filters(prefix)
            ],
        ]
    raise ValueError(f"unknown service account {account!r}")
