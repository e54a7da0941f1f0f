"""A small blocking MQTT 5 client for tests that need the broker's reason codes.

An MQTT 3.1.1 client gets PUBACK 0 for a denied publish; MQTT 5 shows the denial as
reason code 135 (Not authorized), on PUBACK, SUBACK and CONNACK alike.
"""

from __future__ import annotations

import queue
import ssl
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.accounts import ServiceAccount
from tests.services import Services

NOT_AUTHORIZED = 135
NO_MATCHING_SUBSCRIBERS = 16
# A PUBACK that accepted the message (16: nobody subscribed, which is no denial).
ACCEPTED = frozenset({0, NO_MATCHING_SUBSCRIBERS})
ADMINISTRATIVE_ACTION = 152
TIMEOUT = 10.0


class Mqtt5Client:
    """Connect with `open()` (returns the CONNACK reason code), then publish and subscribe
    and read the reason codes the broker answers with."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        client_id: str | None = None,
        cafile: Path | None = None,
        clean_start: bool = True,
        session_expiry: int = 0,
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if cafile is not None:
            self.client.tls_set(ca_certs=str(cafile), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.host, self.port = host, port
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.connacks: queue.Queue[int] = queue.Queue()
        self.disconnects: queue.Queue[int] = queue.Queue()
        self._answered = threading.Condition()
        self._pubacks: dict[int, int] = {}
        self._subacks: dict[int, int] = {}
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def open(self) -> int:
        """Connect; the CONNACK reason code (0 = accepted, 135 = not authorized)."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry
        self.client.connect(
            self.host, self.port, keepalive=30, clean_start=self.clean_start, properties=properties
        )
        self.client.loop_start()
        return self.connacks.get(timeout=TIMEOUT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return self._await(self._pubacks, info.mid)

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1 and return the SUBACK reason code (1 = granted QoS 1)."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        return self._await(self._subacks, mid)

    def _await(self, answers: dict[int, int], mid: int) -> int:
        # paho may call back before publish()/subscribe() has returned the mid to us.
        with self._answered:
            if not self._answered.wait_for(lambda: mid in answers, timeout=TIMEOUT):
                raise TimeoutError(f"no acknowledgement for message id {mid} in {TIMEOUT} s")
            return answers.pop(mid)

    def received(self, timeout: float) -> list[tuple[str, bytes]]:
        """Every message that arrives within `timeout` seconds (after the ones queued)."""
        got: list[tuple[str, bytes]] = []
        try:
            while True:
                got.append(self.messages.get(timeout=timeout))
        except queue.Empty:
            return got

    def next_message(self, timeout: float = TIMEOUT) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout)

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.connacks.put(rc.value)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.disconnects.put(rc.value)

    def _on_publish(
        self, _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: Properties
    ) -> None:
        with self._answered:
            self._pubacks[mid] = rc.value
            self._answered.notify_all()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, mid: int, rcs: list[ReasonCode], _p: Properties
    ) -> None:
        with self._answered:
            self._subacks[mid] = rcs[0].value
            self._answered.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self.messages.put((message.topic, bytes(message.payload)))


def connected_as(services: Services, account: ServiceAccount) -> Mqtt5Client:
    """A connected client on the services' broker with a service account's credentials
    (`loadgen` publishes as any device, `bridge` reads every topic)."""
    credentials = services.credentials(account)
    client = Mqtt5Client(
        host=services.mosquitto.host,
        port=services.mosquitto.port,
        username=credentials.username,
        password=credentials.password,
    )
    if (code := client.open()) != 0:
        raise AssertionError(f"the broker refused {account}: reason code {code}")
    return client
