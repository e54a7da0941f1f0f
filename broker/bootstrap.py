"""Bring a running broker's dynamic security to the wanted state, idempotently.

Run at every start of the local stack, and by hand against a production broker
(`python -m broker bootstrap`): default ACL access, one role per service account with exactly
its ACLs, and the service clients with their passwords. Devices are left alone.
"""

from __future__ import annotations

import queue
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.accounts import LOCAL_ONLY_ACCOUNTS, MqttCredentials, ServiceAccount
from broker.acl import DEFAULT_ACL_ACCESS, Acl, service_acls
from broker.dynsec import BrokerEndpoint, DynsecControl
from broker.dynsec_config import ADMIN_ROLE


def service_role(account: ServiceAccount) -> str:
    return ADMIN_ROLE if account == "admin" else f"service.{account}"


@dataclass
class BootstrapReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{verb} {', '.join(names)}"
            for verb, names in (
                ("created", self.created),
                ("updated", self.updated),
                ("removed", self.removed),
            )
            if names
        ]
        return "; ".join(parts) if parts else "up to date"


def bootstrap_broker(
    control: DynsecControl,
    *,
    accounts: Mapping[ServiceAccount, MqttCredentials],
    topic_prefix: str,
) -> BootstrapReport:
    """Reconcile default access, service roles and service clients; devices are untouched."""
    report = BootstrapReport()
    control.check(
        [
            {
                "command": "setDefaultACLAccess",
                "acls": [{"acltype": k, "allow": v} for k, v in DEFAULT_ACL_ACCESS.items()],
            }
        ]
    )
    for account in accounts:
        wanted = service_acls(account, prefix=topic_prefix)
        _reconcile_role(control, service_role(account), wanted, report)
    for account, credentials in accounts.items():
        if account != "admin":
            _reconcile_client(control, credentials, service_role(account), report)
    for account in LOCAL_ONLY_ACCOUNTS - set(accounts):
        # An account that must not exist here (loadgen in production).
        responses = control.check(
            [
                {"command": "deleteClient", "username": account},
                {"command": "deleteRole", "rolename": service_role(account)},
            ],
            tolerate=("Client not found", "Role not found"),
        )
        if "error" not in responses[0]:
            report.removed.append(account)
    return report


def _reconcile_role(
    control: DynsecControl, rolename: str, wanted: list[Acl], report: BootstrapReport
) -> None:
    (found,) = control.check(
        [{"command": "getRole", "rolename": rolename}], tolerate=("Role not found",)
    )
    if "error" in found:
        control.check(
            [
                {
                    "command": "createRole",
                    "rolename": rolename,
                    "acls": [acl.as_json() for acl in wanted],
                }
            ]
        )
        report.created.append(f"role {rolename}")
        return
    current = {_acl_from_json(entry) for entry in found["data"]["role"].get("acls", [])}
    target = set(wanted)
    stale = current - target
    # The plugin keys an ACL by (type, topic): a changed allow or priority is remove + add.
    commands: list[dict[str, Any]] = [
        {"command": "removeRoleACL", "rolename": rolename, "acltype": a.acltype, "topic": a.topic}
        for a in sorted(stale)
    ]
    commands += [
        {"command": "addRoleACL", "rolename": rolename, **acl.as_json()}
        for acl in sorted(target - current)
    ]
    if commands:
        control.check(commands)
        report.updated.append(f"role {rolename}")


def _reconcile_client(
    control: DynsecControl,
    credentials: MqttCredentials,
    rolename: str,
    report: BootstrapReport,
) -> None:
    (found,) = control.check(
        [{"command": "getClient", "username": credentials.username}],
        tolerate=("Client not found",),
    )
    if "error" in found:
        control.check(
            [
                {
                    "command": "createClient",
                    "username": credentials.username,
                    "password": credentials.password,
                    "textname": f"fleetpulse service account {credentials.username}",
                    "roles": [{"rolename": rolename}],
                }
            ]
        )
        report.created.append(f"client {credentials.username}")
        return
    client = found["data"]["client"]
    changed = False
    roles = {entry["rolename"] for entry in client.get("roles", [])}
    commands: list[dict[str, Any]] = [
        {"command": "removeClientRole", "username": credentials.username, "rolename": role}
        for role in sorted(roles - {rolename})
    ]
    if rolename not in roles:
        commands.append(
            {"command": "addClientRole", "username": credentials.username, "rolename": rolename}
        )
    if client.get("disabled"):
        commands.append({"command": "enableClient", "username": credentials.username})
    if commands:
        control.check(commands)
        changed = True
    # The plugin never reveals a hash; a password that no longer logs in (a new secrets file)
    # is set again. Setting it unconditionally would kick a running service every start.
    if not credentials_work(control.endpoint, credentials, timeout=control.timeout):
        control.check(
            [
                {
                    "command": "setClientPassword",
                    "username": credentials.username,
                    "password": credentials.password,
                }
            ]
        )
        changed = True
    if changed:
        report.updated.append(f"client {credentials.username}")


def _acl_from_json(entry: dict[str, Any]) -> Acl:
    return Acl(
        acltype=entry["acltype"],
        topic=entry["topic"],
        allow=bool(entry.get("allow", False)),
        priority=int(entry.get("priority", 0)),
    )


def credentials_work(
    endpoint: BrokerEndpoint, credentials: MqttCredentials, *, timeout: float = 10.0
) -> bool:
    """Whether the broker accepts these credentials (an MQTT 5 CONNECT, then DISCONNECT)."""
    answers: queue.Queue[ReasonCode] = queue.Queue()

    def on_connect(
        _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
    ) -> None:
        answers.put(rc)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"fleetpulse-check-{secrets.token_hex(6)}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(credentials.username, credentials.password)
    if endpoint.cafile is not None:
        client.tls_set(ca_certs=str(endpoint.cafile), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_connect = on_connect
    client.connect(endpoint.host, endpoint.port, keepalive=10)
    client.loop_start()
    try:
        rc = answers.get(timeout=timeout)
    except queue.Empty:
        return False
    finally:
        client.disconnect()
        client.loop_stop()
    return not rc.is_failure
