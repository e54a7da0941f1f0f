"""A sans-IO MQTT 5 client codec: the packets a subscriber that acknowledges by hand needs.

Bytes in, packets out; packets in, bytes out; no sockets, no clocks. The connection layer
(mqttlink/session.py) owns the I/O. :class:`PacketReader` hands every PUBLISH straight to a
callback (the hot path: no object per message) and returns the other packets.

Encodings follow the MQTT 5.0 specification (OASIS, 2019); tests/test_mqtt_codec.py checks
them against paho-mqtt's own encoder and decoder, and tests/test_ingest.py against Mosquitto.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

CONNECT: Final = 0x10
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 0x82
SUBACK: Final = 9
UNSUBSCRIBE: Final = 0xA2
UNSUBACK: Final = 11
PINGREQ_PACKET: Final = b"\xc0\x00"
PINGRESP: Final = 13
DISCONNECT: Final = 14

#: The largest packet the reader accepts (and CONNECT announces; the broker does not send
#: a bigger one). Above mosquitto.conf's message_size_limit of 1 MiB, so that an oversized
#: payload still arrives and is dead-lettered as too large rather than dropped unseen.
DEFAULT_MAX_PACKET_BYTES: Final = 2 * 1024 * 1024
MAX_VARINT: Final = 268_435_455

# Property identifiers (MQTT 5.0, 2.2.2.2) and the value type of each.
SUBSCRIPTION_IDENTIFIER: Final = 0x0B
SESSION_EXPIRY_INTERVAL: Final = 0x11
ASSIGNED_CLIENT_IDENTIFIER: Final = 0x12
SERVER_KEEP_ALIVE: Final = 0x13
REASON_STRING: Final = 0x1F
RECEIVE_MAXIMUM: Final = 0x21
MAXIMUM_PACKET_SIZE: Final = 0x27
_BYTE, _TWO, _FOUR, _VARINT, _TEXT, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: Final = {
    0x01: _BYTE, 0x02: _FOUR, 0x03: _TEXT, 0x08: _TEXT, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _FOUR, 0x12: _TEXT, 0x13: _TWO, 0x15: _TEXT, 0x16: _BINARY, 0x17: _BYTE,
    0x18: _FOUR, 0x19: _BYTE, 0x1A: _TEXT, 0x1C: _TEXT, 0x1F: _TEXT, 0x21: _TWO,
    0x22: _TWO, 0x23: _TWO, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _FOUR,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip
_REPEATABLE: Final = frozenset({SUBSCRIPTION_IDENTIFIER, 0x26})

_UINT16: Final = struct.Struct("!H")
_UINT32: Final = struct.Struct("!I")
_PUBACK: Final = struct.Struct("!BBH")

PropertyValue = int | str | bytes | tuple[str, str]
#: (topic as sent: bytes that are normally UTF-8, payload, packet id (0 at QoS 0), QoS,
#: subscription identifiers); called for every PUBLISH, in order.
PublishHandler = Callable[[bytes, bytes, int, int, tuple[int, ...]], None]
NO_IDS: Final[tuple[int, ...]] = ()


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid MQTT 5 packet for a client: the connection
    must be closed (what it delivered before stays valid)."""


# --- packets a client receives -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason_code: int
    properties: dict[int, PropertyValue | list[PropertyValue]] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        text = self.properties.get(REASON_STRING)
        return f"reason code {self.reason_code}" + (f" ({text!s})" if isinstance(text, str) else "")


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_id: int
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int
    reason_code: int


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int
    reason_string: str | None = None


ControlPacket = ConnAck | SubAck | UnsubAck | PubAck | PingResp | Disconnect


# --- encoding ---------------------------------------------------------------------


def varint(value: int) -> bytes:
    """An MQTT variable byte integer."""
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"{value} does not fit an MQTT variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _text(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise ValueError(f"a string of {len(data)} bytes does not fit an MQTT string")
    return _UINT16.pack(len(data)) + data


def _binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"{len(value)} bytes do not fit MQTT binary data")
    return _UINT16.pack(len(value)) + value


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def _properties(pairs: Iterable[tuple[int, bytes]]) -> bytes:
    block = b"".join(bytes([identifier]) + value for identifier, value in pairs)
    return varint(len(block)) + block


def connect_packet(
    *,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    keepalive_s: int = 60,
    clean_start: bool = False,
    session_expiry_s: int = 0,
    receive_maximum: int = 65_535,
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
) -> bytes:
    """CONNECT (MQTT 5): a persistent session unless ``clean_start``, no will."""
    if not 0 <= keepalive_s <= 0xFFFF or not 1 <= receive_maximum <= 0xFFFF:
        raise ValueError("keepalive_s must be 0-65535 and receive_maximum 1-65535")
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    properties = []
    if session_expiry_s:
        properties.append((SESSION_EXPIRY_INTERVAL, _UINT32.pack(session_expiry_s)))
    if receive_maximum != 0xFFFF:
        properties.append((RECEIVE_MAXIMUM, _UINT16.pack(receive_maximum)))
    properties.append((MAXIMUM_PACKET_SIZE, _UINT32.pack(max_packet_bytes)))
    body = b"\x00\x04MQTT\x05" + bytes([flags]) + _UINT16.pack(keepalive_s)
    body += _properties(properties) + _text(client_id)
    if username is not None:
        body += _text(username)
    if password is not None:
        body += _binary(password.encode())
    return _packet(CONNECT, body)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE, with its options (MQTT 5.0, 3.8.3.1)."""

    topic_filter: str
    qos: int = 1
    no_local: bool = False
    retain_as_published: bool = False
    #: 0: send retained messages; 1: only for a new subscription; 2: never.
    retain_handling: int = 0

    def options(self) -> int:
        return (
            self.qos
            | (0x04 if self.no_local else 0)
            | (0x08 if self.retain_as_published else 0)
            | (self.retain_handling << 4)
        )


def subscribe_packet(
    packet_id: int, subscriptions: Sequence[Subscription], *, subscription_id: int | None = None
) -> bytes:
    properties = (
        [] if subscription_id is None else [(SUBSCRIPTION_IDENTIFIER, varint(subscription_id))]
    )
    body = _UINT16.pack(packet_id) + _properties(properties)
    body += b"".join(_text(s.topic_filter) + bytes([s.options()]) for s in subscriptions)
    return _packet(SUBSCRIBE, body)


def unsubscribe_packet(packet_id: int, topic_filters: Sequence[str]) -> bytes:
    body = _UINT16.pack(packet_id) + b"\x00" + b"".join(_text(f) for f in topic_filters)
    return _packet(UNSUBSCRIBE, body)


def puback_packets(packet_ids: Iterable[int]) -> bytes:
    """One PUBACK (success, no properties) per packet id, in order, as one write."""
    pack = _PUBACK.pack
    return b"".join([pack(0x40, 2, packet_id) for packet_id in packet_ids])


def publish_packet(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    packet_id: int = 0,
    retain: bool = False,
    duplicate: bool = False,
) -> bytes:
    """PUBLISH without properties (what a test or a publisher of ours sends)."""
    first = 0x30 | (0x08 if duplicate else 0) | (qos << 1) | (0x01 if retain else 0)
    body = _text(topic) + (_UINT16.pack(packet_id) if qos else b"") + b"\x00" + payload
    return _packet(first, body)


def disconnect_packet(reason_code: int = 0) -> bytes:
    return b"\xe0\x00" if reason_code == 0 else b"\xe0\x01" + bytes([reason_code])


# --- decoding ---------------------------------------------------------------------


class PacketReader:
    """Splits the byte stream of one connection into packets.

    ``feed`` takes whatever arrived and calls ``on_publish`` for each complete PUBLISH and
    ``on_control`` for each other packet, in the order they came (a CONNACK is handled
    before the messages behind it); an incomplete tail waits for the next call.
    Raises ProtocolError for a malformed packet or one larger than ``max_packet_bytes``
    (the bytes up to it were handled); the reader is unusable afterwards."""

    def __init__(
        self,
        *,
        on_publish: PublishHandler,
        on_control: Callable[[ControlPacket], None],
        max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    ) -> None:
        self._on_publish = on_publish
        self._on_control = on_control
        self._max_packet_bytes = max_packet_bytes
        self._tail = b""

    def buffered(self) -> int:
        """Bytes of an incomplete packet waiting for the rest."""
        return len(self._tail)

    def feed(self, data: bytes) -> None:
        buf = self._tail + data if self._tail else data
        pos, end = 0, len(buf)
        on_publish, limit = self._on_publish, self._max_packet_bytes
        try:
            while pos + 1 < end:
                first = buf[pos]
                length = buf[pos + 1]
                at = pos + 2
                if length > 0x7F:
                    length, at = _remaining_length(buf, pos + 1, end)
                    if length < 0:
                        break  # the length itself is incomplete
                packet_end = at + length
                if packet_end - pos > limit:
                    raise ProtocolError(f"a packet of {packet_end - pos} bytes; limit {limit}")
                if packet_end > end:
                    break
                if first >> 4 == PUBLISH:
                    _publish(first, buf, at, packet_end, on_publish)
                else:
                    self._on_control(_control(first, buf[at:packet_end]))
                pos = packet_end
        except ProtocolError:
            self._tail = b""
            raise
        except (IndexError, struct.error, UnicodeDecodeError) as exc:
            self._tail = b""
            raise ProtocolError(f"malformed packet: {exc}") from exc
        self._tail = buf[pos:] if pos < end else b""


def _remaining_length(buf: bytes, at: int, end: int) -> tuple[int, int]:
    """(value, position after it) of the variable byte integer at ``at``; (-1, at) if it
    is incomplete. Raises ProtocolError beyond four bytes."""
    value, shift, pos = 0, 0, at
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ProtocolError("a variable byte integer longer than four bytes")
    return -1, at


def _publish(first: int, buf: bytes, at: int, end: int, on_publish: PublishHandler) -> None:
    qos = (first >> 1) & 3
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    topic_end = at + 2 + ((buf[at] << 8) | buf[at + 1])
    topic = buf[at + 2 : topic_end]
    packet_id = 0
    at = topic_end
    if qos:
        packet_id = (buf[at] << 8) | buf[at + 1]
        at += 2
    if at >= end:
        raise ProtocolError("PUBLISH ends before its properties")
    if buf[at] == 0:
        ids = NO_IDS
        at += 1
    else:
        properties, at = _read_properties(buf, at, end)
        found = properties.get(SUBSCRIPTION_IDENTIFIER)
        ids = tuple(v for v in found if isinstance(v, int)) if isinstance(found, list) else NO_IDS
    if not topic:
        raise ProtocolError("PUBLISH without a topic (topic aliases are not enabled)")
    on_publish(topic, buf[at:end], packet_id, qos, ids)


def _read_properties(
    buf: bytes, at: int, end: int
) -> tuple[dict[int, PropertyValue | list[PropertyValue]], int]:
    length, at = _remaining_length(buf, at, end)
    block_end = at + length
    if length < 0 or block_end > end:
        raise ProtocolError("a property block longer than its packet")
    found: dict[int, PropertyValue | list[PropertyValue]] = {}
    while at < block_end:
        identifier = buf[at]
        kind = _PROPERTY_TYPES.get(identifier)
        if kind is None:
            raise ProtocolError(f"unknown property 0x{identifier:02x}")
        value, at = _property_value(kind, buf, at + 1, block_end)
        if identifier in _REPEATABLE:
            listed = found.setdefault(identifier, [])
            assert isinstance(listed, list)
            listed.append(value)
        elif identifier in found:
            raise ProtocolError(f"property 0x{identifier:02x} twice")
        else:
            found[identifier] = value
    if at != block_end:
        raise ProtocolError("a property runs past its block")
    return found, at


def _property_value(kind: int, buf: bytes, at: int, end: int) -> tuple[PropertyValue, int]:
    if kind == _BYTE:
        return _checked(buf[at], at + 1, end)
    if kind == _TWO:
        return _checked(_UINT16.unpack_from(buf, at)[0], at + 2, end)
    if kind == _FOUR:
        return _checked(_UINT32.unpack_from(buf, at)[0], at + 4, end)
    if kind == _VARINT:
        number, after = _remaining_length(buf, at, end)
        if number < 0:
            raise ProtocolError("an incomplete variable byte integer property")
        return number, after
    if kind == _PAIR:
        key, at = _sized(buf, at, end)
        text, at = _sized(buf, at, end)
        return (key.decode(), text.decode()), at
    data, at = _sized(buf, at, end)
    return (data.decode() if kind == _TEXT else data), at


def _sized(buf: bytes, at: int, end: int) -> tuple[bytes, int]:
    """Two-byte length, then that many bytes (an MQTT string or binary data)."""
    value_end = at + 2 + _UINT16.unpack_from(buf, at)[0]
    if value_end > end:
        raise ProtocolError("a property runs past its block")
    return buf[at + 2 : value_end], value_end


def _checked(value: PropertyValue, after: int, end: int) -> tuple[PropertyValue, int]:
    if after > end:
        raise ProtocolError("a property runs past its block")
    return value, after


def _control(first: int, body: bytes) -> ControlPacket:
    kind = first >> 4
    if kind == CONNACK:
        if len(body) < 2:
            raise ProtocolError("CONNACK too short")
        properties = _read_properties(body, 2, len(body))[0] if len(body) > 2 else {}
        return ConnAck(bool(body[0] & 1), body[1], properties)
    if kind in (SUBACK, UNSUBACK):
        packet_id = _UINT16.unpack_from(body, 0)[0]
        _, at = _read_properties(body, 2, len(body))
        codes = tuple(body[at:])
        return SubAck(packet_id, codes) if kind == SUBACK else UnsubAck(packet_id, codes)
    if kind == PUBACK:
        packet_id = _UINT16.unpack_from(body, 0)[0]
        return PubAck(packet_id, body[2] if len(body) > 2 else 0)
    if kind == PINGRESP:
        return PingResp()
    if kind == DISCONNECT:
        if not body:
            return Disconnect(0)
        reason_string = None
        if len(body) > 1:
            properties = _read_properties(body, 1, len(body))[0]
            text = properties.get(REASON_STRING)
            reason_string = text if isinstance(text, str) else None
        return Disconnect(body[0], reason_string)
    raise ProtocolError(f"unexpected packet type {kind} from the server")
