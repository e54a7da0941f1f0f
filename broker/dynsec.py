"""Mosquitto's dynamic-security plugin, live: commands to a running broker.

The plugin takes commands as JSON on `$CONTROL/dynamic-security/v1` and answers on
`.../v1/response`. Its file before the first start is broker.dynsec_config.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import secrets
import ssl
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

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"

T = TypeVar("T")


class BrokerAdminError(Exception):
    """The dynamic-security admin could not reach or use the broker."""


class DynsecCommandError(BrokerAdminError):
    """The plugin refused a command; `reason` is its own words ("Client not found", ...)."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"dynamic security refused {command}: {reason}")
        self.command = command
        self.reason = reason


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
