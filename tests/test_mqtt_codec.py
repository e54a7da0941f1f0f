"""mqttlink's sans-IO codec against paho-mqtt's own encoder and decoder.

A real paho client talks to a socket the test holds: what paho writes (CONNECT, SUBSCRIBE,
UNSUBSCRIBE, PUBLISH, PUBACK, DISCONNECT) must be what our encoders write byte for byte, and
our reader must read paho's PUBLISH packets, however the stream is cut. Random bytes either
decode or raise ProtocolError, never anything else.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqttlink import codec
from mqttlink.codec import ConnAck, ControlPacket, Disconnect, PacketReader, ProtocolError


@dataclass
class Received:
    publishes: list[tuple[bytes, bytes, int, int, tuple[int, ...]]] = field(default_factory=list)
    controls: list[ControlPacket] = field(default_factory=list)

    def reader(self) -> PacketReader:
        return PacketReader(
            on_publish=lambda *args: self.publishes.append(args), on_control=self.controls.append
        )


@dataclass
class PahoPeer:
    """A connected paho client and the test's end of its socket."""

    client: mqtt.Client
    sock: socket.socket
    connect_bytes: bytes

    def take(self) -> bytes:
        """What paho wrote, once it has flushed."""
        self.client.loop_write()
        return self.sock.recv(1 << 20)


@contextmanager
def paho_peer(**connect: object) -> Iterator[PahoPeer]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="codec-test",
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set("user", "secret")
        client.connect("127.0.0.1", server.getsockname()[1], **connect)  # type: ignore[arg-type]
        sock, _ = server.accept()
    sock.settimeout(10)
    try:
        connect_bytes = sock.recv(1 << 16)
        sock.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK: success, no properties
        client.loop_read()
        yield PahoPeer(client, sock, connect_bytes)
    finally:
        client.disconnect()
        client.loop_write()
        sock.close()


def test_connect_is_written_as_paho_writes_it() -> None:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 86_400
    properties.ReceiveMaximum = 20_000
    properties.MaximumPacketSize = codec.DEFAULT_MAX_PACKET_BYTES
    with paho_peer(keepalive=30, clean_start=False, properties=properties) as peer:
        ours = codec.connect_packet(
            client_id="codec-test",
            username="user",
            password="secret",
            keepalive_s=30,
            session_expiry_s=86_400,
            receive_maximum=20_000,
        )
        assert ours == peer.connect_bytes


@given(
    filters=st.lists(
        st.builds(
            "/".join,
            st.lists(
                st.just("+") | st.text(st.characters(codec="utf-8", exclude_characters="\x00#+/")),
                min_size=1,
                max_size=4,
            ),
        ).map(lambda f: f or "+")
        | st.just("fleet/#"),
        min_size=1,
        max_size=4,
    ),
    qos=st.integers(0, 2),
    retain_handling=st.integers(0, 2),
    subscription_id=st.none() | st.integers(1, codec.MAX_VARINT),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_subscribe_and_unsubscribe_are_written_as_paho_writes_them(
    filters: list[str], qos: int, retain_handling: int, subscription_id: int | None
) -> None:
    with paho_peer() as peer:
        properties = None
        if subscription_id is not None:
            properties = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
            properties.SubscriptionIdentifier = subscription_id
        options = SubscribeOptions(qos=qos, retainHandling=retain_handling)
        _, mid = peer.client.subscribe([(f, options) for f in filters], properties=properties)
        assert mid is not None
        subscriptions = [
            codec.Subscription(f, qos=qos, retain_handling=retain_handling) for f in filters
        ]
        ours = codec.subscribe_packet(mid, subscriptions, subscription_id=subscription_id)
        assert ours == peer.take()
        _, mid = peer.client.unsubscribe(filters)
        assert mid is not None
        assert codec.unsubscribe_packet(mid, filters) == peer.take()


def test_puback_and_disconnect_are_written_as_paho_writes_them() -> None:
    with paho_peer() as peer:
        peer.sock.sendall(codec.publish_packet("a/b", b"x", qos=1, packet_id=4711))
        peer.client.loop_read()
        peer.client.ack(4711, 1)
        assert peer.take() == codec.puback_packets([4711])
        peer.client.disconnect()
        assert peer.take() == codec.disconnect_packet()
    assert codec.puback_packets([1, 2]) == codec.puback_packets([1]) + codec.puback_packets([2])


topics = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00#+"), min_size=1, max_size=300
)
publish_properties = st.fixed_dictionaries(
    {},
    optional={
        "MessageExpiryInterval": st.integers(0, 2**32 - 1),
        "ContentType": st.text(max_size=20),
        "ResponseTopic": st.text(min_size=1, max_size=20),
        "CorrelationData": st.binary(max_size=20),
        "UserProperty": st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3),
        "SubscriptionIdentifier": st.lists(
            st.integers(1, codec.MAX_VARINT), min_size=1, max_size=3
        ),
    },
)


@given(
    messages=st.lists(
        st.tuples(topics, st.binary(max_size=5000), st.integers(0, 1), publish_properties),
        min_size=1,
        max_size=5,
    ),
    cuts=st.lists(st.integers(1, 400), max_size=30),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_publish_packets_paho_writes_are_read_however_the_stream_is_cut(
    messages: list[tuple[str, bytes, int, dict[str, object]]], cuts: list[int]
) -> None:
    with paho_peer() as peer:
        for topic, payload, qos, values in messages:
            properties = None
            if values:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                for name, value in values.items():
                    setattr(properties, name, value)
            peer.client.publish(topic, payload, qos=qos, properties=properties)
        stream = b""
        while _complete_packets(stream) < len(messages):
            stream += peer.take()
        received = Received()
        reader = received.reader()
        at = 0
        for cut in cuts:
            reader.feed(stream[at : at + cut])
            at += cut
        reader.feed(stream[at:])
    assert reader.buffered() == 0
    assert received.controls == []
    assert [(t.decode(), p, q) for t, p, _, q, _ in received.publishes] == [
        (topic, payload, qos) for topic, payload, qos, _ in messages
    ]
    for (*_, ids), (*_, values) in zip(received.publishes, messages, strict=True):
        assert list(ids) == values.get("SubscriptionIdentifier", [])


def _complete_packets(stream: bytes) -> int:
    """How many whole packets ``stream`` holds (an incomplete last one not counted)."""
    at = count = 0
    while at < len(stream):
        length, body = codec._remaining_length(stream, at + 1, len(stream))
        if length < 0 or body + length > len(stream):
            break
        at, count = body + length, count + 1
    return count


@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(1, 64), max_size=20))
def test_any_bytes_are_read_or_refused_with_a_protocol_error(data: bytes, cuts: list[int]) -> None:
    reader = Received().reader()
    at = 0
    try:
        for cut in [*cuts, len(data)]:
            reader.feed(data[at : at + cut])
            at += cut
    except ProtocolError:
        pass


def test_control_packets_from_a_server() -> None:
    received = Received()
    reader = received.reader()
    reason = b"\x1f\x00\x04nope"
    reader.feed(b"\x20\x03\x01\x00\x00")  # CONNACK, session present
    reader.feed(b"\x20" + bytes([3 + len(reason)]) + b"\x00\x87" + bytes([len(reason)]) + reason)
    reader.feed(b"\x90\x05\x00\x07\x00\x01\x80")  # SUBACK 7: QoS 1 granted, one refused
    reader.feed(b"\xb0\x04\x00\x08\x00\x11")  # UNSUBACK 8: no subscription existed
    reader.feed(b"\xd0\x00\xe0\x00")  # PINGRESP, DISCONNECT
    assert received.controls == [
        ConnAck(True, 0),
        ConnAck(False, 0x87, {codec.REASON_STRING: "nope"}),
        codec.SubAck(7, (1, 0x80)),
        codec.UnsubAck(8, (0x11,)),
        codec.PingResp(),
        Disconnect(0),
    ]
    assert received.controls[1].reason == "reason code 135 (nope)"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x36\x05\x00\x01a\x00\x00", "QoS 3"),
        (b"\x30\xff\xff\xff\xff\x7f", "longer than four bytes"),
        (b"\x30\x03\x00\x00\x00", "without a topic"),
        (b"\x30\x05\x00\x01a\x01\x63", "unknown property"),
        (b"\x10\x00", "unexpected packet type 1"),
        (b"\x30\x81\x80\x80\x01", "limit"),
    ],
)
def test_malformed_packets_are_refused_with_a_reason(data: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        Received().reader().feed(data)


def test_a_packet_waits_for_its_last_byte() -> None:
    received = Received()
    reader = received.reader()
    packet = codec.publish_packet("t", b"payload", qos=1, packet_id=3)
    for byte in packet[:-1]:
        reader.feed(bytes([byte]))
    assert received.publishes == []
    assert reader.buffered() == len(packet) - 1
    reader.feed(packet[-1:])
    assert received.publishes == [(b"t", b"payload", 3, 1, ())]
