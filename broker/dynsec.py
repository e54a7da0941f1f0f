"""Mosquitto's dynamic-security plugin: where it is, its first config file, its control topic.

The plugin keeps clients, roles and ACLs in a JSON file it rewrites on every change, and takes
commands as JSON on `$CONTROL/dynamic-security/v1`, answering on `.../v1/response`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import queue
import secrets
import ssl
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.accounts import MqttCredentials
from broker.acl import DEFAULT_ACL_ACCESS, Acl

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
PLUGIN_NAME = "mosquitto_dynamic_security.so"
# The plugin's own choice in 2.0.11 (sha512-pbkdf2); keeps first-boot hashes like later ones.
PBKDF2_ITERATIONS = 101
ADMIN_ROLE = "admin"

T = TypeVar("T")


class BrokerAdminError(Exception):
    """The dynamic-security admin could not reach or use the broker."""


class DynsecCommandError(BrokerAdminError):
    """The plugin refused a command; `reason` is its own words ("Client not found", ...)."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"dynamic security refused {command}: {reason}")
        self.command = command
        self.reason = reason


def find_plugin(configured: Path | None = None) -> Path:
    """The plugin shared object: the configured path, else where the mosquitto package put it."""
    if configured is not None:
        if not configured.is_file():
            raise BrokerAdminError(
                f"FLEETPULSE_MQTT_DYNSEC_PLUGIN={configured} does not exist; "
                f"point it at {PLUGIN_NAME}"
            )
        return configured
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "mosquitto"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        listing = ""
    candidates = [Path(line) for line in listing.splitlines() if line.endswith("/" + PLUGIN_NAME)]
    candidates += sorted(Path("/usr/lib").glob(f"*/{PLUGIN_NAME}"))
    candidates += [Path("/usr/lib") / PLUGIN_NAME, Path("/usr/local/lib") / PLUGIN_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BrokerAdminError(
        f"cannot find Mosquitto's {PLUGIN_NAME}: install the mosquitto package (make setup) "
        "or set FLEETPULSE_MQTT_DYNSEC_PLUGIN to its path"
    )


def hash_password(password: str, *, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's stored form of a password: base64 sha512-pbkdf2 hash, salt, iterations."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


def write_initial_config(path: Path, *, admin: MqttCredentials, admin_acls: list[Acl]) -> bool:
    """Create the plugin's file with only the admin in it; False when it already exists (the
    plugin owns it from then on, and devices added later live there)."""
    if path.exists():
        return False
    config = {
        "clients": [
            {
                "username": admin.username,
                "textName": "fleetpulse dynamic-security admin",
                **hash_password(admin.password),
                "roles": [{"rolename": ADMIN_ROLE}],
            }
        ],
        "roles": [{"rolename": ADMIN_ROLE, "acls": [acl.as_json() for acl in admin_acls]}],
        "defaultACLAccess": DEFAULT_ACL_ACCESS,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    return True


def ensure_admin_password(path: Path, *, admin: MqttCredentials) -> bool:
    """Make the plugin's file accept the admin's current password (a lost or regenerated
    secrets file); only while the broker is stopped, since the plugin owns the file when it
    runs. True when the file was changed."""
    config = json.loads(path.read_text(encoding="utf-8"))
    for client in config.get("clients", []):
        if client.get("username") != admin.username:
            continue
        try:
            salt = base64.b64decode(client["salt"])
            matches = hash_password(admin.password, salt=salt)["password"] == client["password"]
        except (KeyError, ValueError):
            matches = False
        if matches and client.get("iterations") == PBKDF2_ITERATIONS:
            return False
        client.update(hash_password(admin.password))
        client.pop("disabled", None)
        break
    else:
        raise BrokerAdminError(
            f"{path} has no client {admin.username!r}; move the file away to start afresh "
            "(devices in it would then need new credentials)"
        )
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    os.replace(temporary, path)
    return True


@dataclass(frozen=True)
class BrokerEndpoint:
    host: str
    port: int
    cafile: Path | None = None

    def __str__(self) -> str:
        return f"{'mqtts' if self.cafile else 'mqtt'}://{self.host}:{self.port}"


@dataclass
class DynsecControl:
    """A connection of the admin to the control topic; use it as a context manager.

    Commands go out one batch at a time and each waits for its answer."""

    endpoint: BrokerEndpoint
    admin: MqttCredentials
    timeout: float = 10.0
    _client: mqtt.Client | None = field(default=None, init=False, repr=False)
    _responses: queue.Queue[dict[str, Any]] = field(
        default_factory=queue.Queue, init=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _sequence: itertools.count[int] = field(default_factory=itertools.count, init=False)

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        if self._client is not None:
            return
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fleetpulse-dynsec-{secrets.token_hex(6)}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(self.admin.username, self.admin.password)
        if self.endpoint.cafile is not None:
            client.tls_set(ca_certs=str(self.endpoint.cafile), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        connected: queue.Queue[ReasonCode] = queue.Queue()
        subscribed: queue.Queue[list[ReasonCode]] = queue.Queue()

        def on_connect(
            c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
        ) -> None:
            # On every (re)connect: paho reconnects a long-lived control connection by itself,
            # and a clean session has lost the subscription to the answers.
            if not rc.is_failure:
                c.subscribe(RESPONSE_TOPIC, qos=1)
            connected.put(rc)

        def on_subscribe(
            _c: mqtt.Client, _u: object, _m: int, rcs: list[ReasonCode], _p: Properties | None
        ) -> None:
            subscribed.put(rcs)

        def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            # A payload that is not JSON is not an answer; the waiting command times out.
            with contextlib.suppress(ValueError):
                self._responses.put(json.loads(message.payload))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        try:
            client.connect(self.endpoint.host, self.endpoint.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerAdminError(f"cannot reach the broker at {self.endpoint}: {exc}") from None
        client.loop_start()
        try:
            rc = self._wait(connected, "the broker's CONNACK")
            if rc.is_failure:
                raise BrokerAdminError(
                    f"the broker at {self.endpoint} refused the admin account "
                    f"{self.admin.username!r}: {rc}; check FLEETPULSE_MQTT_ADMIN_PASSWORD or "
                    "the secrets file in the data folder"
                )
            granted = self._wait(subscribed, "the subscription to the control responses")
            if any(code.is_failure for code in granted):
                raise BrokerAdminError(
                    f"{self.admin.username!r} may not read {RESPONSE_TOPIC}: {granted[0]}"
                )
        except BaseException:
            client.loop_stop()
            client.disconnect()
            raise
        self._client = client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def run(self, commands: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send a batch of commands and return the plugin's responses, one per command, in
        order. A response with an "error" key is a refusal; `check` turns it into an error."""
        if self._client is None:
            self.open()
        assert self._client is not None
        with self._lock:
            tag = f"fleetpulse-{next(self._sequence)}"
            batch = [
                {**command, "correlationData": f"{tag}-{index}"}
                for index, command in enumerate(commands)
            ]
            if not batch:
                return []
            self._client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1)
            while True:
                reply = self._wait(self._responses, f"the answer to {batch[0]['command']}")
                responses = reply.get("responses")
                if not isinstance(responses, list) or not responses:
                    continue
                if responses[0].get("correlationData", "").startswith(f"{tag}-"):
                    by_tag = {r.get("correlationData"): r for r in responses}
                    return [by_tag.get(c["correlationData"], {}) for c in batch]

    def check(
        self, commands: Iterable[dict[str, Any]], *, tolerate: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """`run`, raising DynsecCommandError for any refusal not listed in `tolerate`."""
        batch = list(commands)
        allowed = set(tolerate)
        responses = self.run(batch)
        for command, response in zip(batch, responses, strict=True):
            error = response.get("error")
            if error and error not in allowed:
                raise DynsecCommandError(command["command"], str(error))
        return responses

    def _wait(self, source: queue.Queue[T], what: str) -> T:
        try:
            return source.get(timeout=self.timeout)
        except queue.Empty:
            raise BrokerAdminError(
                f"no answer from the broker at {self.endpoint} within {self.timeout:.0f} s "
                f"while waiting for {what}"
            ) from None
