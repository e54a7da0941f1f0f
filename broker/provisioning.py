"""Device credentials: create, rotate and revoke, in the broker and in the `devices` table.

The broker's dynamic-security plugin keeps only a salted hash of each password; the password
itself is returned once by `create` or `rotate` and kept nowhere. Each device gets its own
role (Mosquitto 2.0.11 cannot substitute %u in ACLs) and must connect with its username as
client id, so that it can never take over the session of another client.

Blocking (paho + psycopg); async callers use `await asyncio.to_thread(provisioner.create, ...)`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.rows import dict_row

from broker.accounts import admin_credentials
from broker.acl import (
    DeviceKind,
    device_acls,
    device_publish_topics,
    device_role,
    device_subscribe_topics,
    device_username,
)
from broker.dynsec import BrokerEndpoint, DynsecControl
from config.settings import Settings

OWNER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PASSWORD_BYTES = 24


class ProvisioningError(Exception):
    """A device could not be provisioned; the message says why and what to do."""


class InvalidDeviceError(ProvisioningError, ValueError):
    pass


class DeviceExistsError(ProvisioningError):
    pass


class DeviceNotFoundError(ProvisioningError):
    pass


@dataclass(frozen=True)
class DeviceCredentials:
    """What a device needs to connect; the password is shown this once."""

    username: str
    password: str
    client_id: str
    kind: DeviceKind
    owner_id: str
    publish_topics: tuple[str, ...]
    subscribe_topics: tuple[str, ...]

    def __repr__(self) -> str:
        return f"DeviceCredentials(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class Device:
    username: str
    kind: DeviceKind
    owner_id: str
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def parse_kind(kind: str | DeviceKind) -> DeviceKind:
    try:
        return DeviceKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in DeviceKind)
        raise InvalidDeviceError(f"device kind {kind!r} is not one of {choices}") from None


def parse_device(kind: str | DeviceKind, owner_id: str) -> tuple[DeviceKind, str]:
    parsed = parse_kind(kind)
    if not OWNER_ID.match(owner_id):
        raise InvalidDeviceError(
            f"device owner id {owner_id!r} must be 1-64 characters of A-Z, a-z, 0-9, _ and -"
        )
    return parsed, owner_id


class DeviceProvisioner:
    """Provisioning against one broker and one database. Reuses its admin connection to the
    broker until `close` (or the end of a `with` block)."""

    def __init__(self, *, dsn: str, control: DynsecControl, topic_prefix: str) -> None:
        self._dsn = dsn
        self._control = control
        self._prefix = topic_prefix

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = 10.0) -> DeviceProvisioner:
        """The broker at FLEETPULSE_MQTT_HOST/PORT with the admin account, the database at
        the settings' DSN."""
        control = DynsecControl(
            BrokerEndpoint(settings.mqtt_host, settings.mqtt_port),
            admin_credentials(settings),
            timeout=timeout,
        )
        return cls(dsn=settings.dsn, control=control, topic_prefix=settings.topic_prefix)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._control.close()

    def create(self, *, kind: str | DeviceKind, owner_id: str) -> DeviceCredentials:
        """New credentials for a courier's phone or a vehicle's tracker.

        Raises DeviceExistsError when the owner already has an active device (rotate it)."""
        kind, owner_id = parse_device(kind, owner_id)
        username = device_username(kind, owner_id)
        with self._connect() as conn, conn.transaction():
            row = conn.execute(
                """
                INSERT INTO devices (username, owner_kind, owner_id)
                VALUES (%s, %s, %s)
                ON CONFLICT (username) DO UPDATE
                    SET created_at = now(), rotated_at = NULL, revoked_at = NULL
                    WHERE devices.revoked_at IS NOT NULL
                RETURNING username
                """,
                (username, kind.value, owner_id),
            ).fetchone()
            if row is None:
                raise DeviceExistsError(
                    f"{username} already has credentials; rotate them "
                    f"(`python -m broker.devices rotate {kind.value} {owner_id}`) or revoke first"
                )
            # Inside the transaction: if the broker refuses, no row claims a device it lacks.
            return self._install(kind, owner_id)

    def rotate(self, *, kind: str | DeviceKind, owner_id: str) -> DeviceCredentials:
        """A new password for an active device; the old one stops working and any connection
        made with it is closed at once."""
        kind, owner_id = parse_device(kind, owner_id)
        username = device_username(kind, owner_id)
        with self._connect() as conn, conn.transaction():
            self._lock_active(conn, username)
            password = new_device_password()
            (response,) = self._control.check(
                [{"command": "setClientPassword", "username": username, "password": password}],
                tolerate=("Client not found",),
            )
            if "error" in response:
                # The broker lost it (a reset data folder): install it again.
                credentials = self._install(kind, owner_id)
            else:
                credentials = self._credentials(kind, owner_id, password)
            conn.execute("UPDATE devices SET rotated_at = now() WHERE username = %s", (username,))
            return credentials

    def revoke(self, *, kind: str | DeviceKind, owner_id: str) -> Device:
        """Delete the device's client and role from the broker, which disconnects it at once,
        and mark it revoked. Revoking a revoked device changes nothing."""
        kind, owner_id = parse_device(kind, owner_id)
        username = device_username(kind, owner_id)
        with self._connect() as conn, conn.transaction():
            row = conn.execute(
                "SELECT username FROM devices WHERE username = %s FOR UPDATE", (username,)
            ).fetchone()
            if row is None:
                raise DeviceNotFoundError(f"no device {username} was ever provisioned")
            self._control.check(
                [
                    {"command": "deleteClient", "username": username},
                    {"command": "deleteRole", "rolename": device_role(username)},
                ],
                tolerate=("Client not found", "Role not found"),
            )
            conn.execute(
                "UPDATE devices SET revoked_at = coalesce(revoked_at, now()) WHERE username = %s",
                (username,),
            )
            device = self._get(conn, username)
            assert device is not None
            return device

    def get(self, *, kind: str | DeviceKind, owner_id: str) -> Device | None:
        kind, owner_id = parse_device(kind, owner_id)
        with self._connect() as conn:
            return self._get(conn, device_username(kind, owner_id))

    def list(
        self, *, kind: str | DeviceKind | None = None, include_revoked: bool = False
    ) -> list[Device]:
        clauses, params = [], []
        if kind is not None:
            clauses.append("owner_kind = %s")
            params.append(parse_kind(kind).value)
        if not include_revoked:
            clauses.append("revoked_at IS NULL")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM devices {where} ORDER BY owner_kind, owner_id",  # noqa: S608
                params,
            ).fetchall()
        return [_device(row) for row in rows]

    def _install(self, kind: DeviceKind, owner_id: str) -> DeviceCredentials:
        username = device_username(kind, owner_id)
        role = device_role(username)
        password = new_device_password()
        # Delete first: a client left behind by an earlier failure must not keep its password.
        self._control.check(
            [
                {"command": "deleteClient", "username": username},
                {"command": "deleteRole", "rolename": role},
                {
                    "command": "createRole",
                    "rolename": role,
                    "acls": [acl.as_json() for acl in device_acls(kind, owner_id, self._prefix)],
                },
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "clientid": username,
                    "textname": f"{kind.value} {owner_id}",
                    "roles": [{"rolename": role}],
                },
            ],
            tolerate=("Client not found", "Role not found"),
        )
        return self._credentials(kind, owner_id, password)

    def _credentials(self, kind: DeviceKind, owner_id: str, password: str) -> DeviceCredentials:
        username = device_username(kind, owner_id)
        return DeviceCredentials(
            username=username,
            password=password,
            client_id=username,
            kind=kind,
            owner_id=owner_id,
            publish_topics=device_publish_topics(kind, owner_id, self._prefix),
            subscribe_topics=device_subscribe_topics(kind, owner_id, self._prefix),
        )

    def _lock_active(self, conn: psycopg.Connection[dict[str, Any]], username: str) -> None:
        row = conn.execute(
            "SELECT revoked_at FROM devices WHERE username = %s FOR UPDATE", (username,)
        ).fetchone()
        if row is None or row["revoked_at"] is not None:
            raise DeviceNotFoundError(
                f"{username} has no active credentials; create them with "
                f"`python -m broker.devices add {username.replace('.', ' ', 1)}`"
            )

    def _get(self, conn: psycopg.Connection[dict[str, Any]], username: str) -> Device | None:
        row = conn.execute("SELECT * FROM devices WHERE username = %s", (username,)).fetchone()
        return None if row is None else _device(row)

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        try:
            return psycopg.connect(self._dsn, row_factory=dict_row)
        except psycopg.OperationalError as exc:
            raise ProvisioningError(f"cannot reach the database to record devices: {exc}") from exc


def new_device_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def _device(row: dict[str, Any]) -> Device:
    return Device(
        username=row["username"],
        kind=DeviceKind(row["owner_kind"]),
        owner_id=row["owner_id"],
        created_at=row["created_at"],
        rotated_at=row["rotated_at"],
        revoked_at=row["revoked_at"],
    )
