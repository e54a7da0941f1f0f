"""Fast decoding and validation of whole MQTT messages (topic + payload) with msgspec."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from protocol.json_limits import json_limit_violation
from protocol.payloads import (
    MAX_PAYLOAD_BYTES,
    Decoded,
    DeliveryStatusEvent,
    DeliveryStatusPayload,
    EmergencyEvent,
    EmergencyPayload,
    Fix,
    GeofenceEvent,
    LocationPayload,
    OwnTracksHeader,
    OwnTracksLocation,
    OwnTracksLwt,
    OwnTracksTransition,
    PresenceEvent,
    PresencePayload,
    Rejection,
    RejectionCode,
)
from protocol.topics import DEFAULT_PREFIX, Topic, TopicError, TopicKind, parse_topic

EPOCH_2000 = 946_684_800.0
KMH_TO_MS = 1 / 3.6
TOPIC_CACHE_SIZE = 100_000
_JSON_NUL = b"\\u0000"
_LOCATION_KINDS = frozenset({TopicKind.COURIER_LOCATION, TopicKind.VEHICLE_LOCATION})


class RejectedError(Exception):
    """Raised inside decoding; carries the Rejection that ends up in dead letters."""

    def __init__(self, code: RejectionCode, reason: str) -> None:
        super().__init__(reason)
        self.rejection = Rejection(code, reason)


_location_or_batch = msgspec.json.Decoder(LocationPayload | list[LocationPayload])
_location = msgspec.json.Decoder(LocationPayload)
_raw_batch = msgspec.json.Decoder(list[msgspec.Raw])
_presence = msgspec.json.Decoder(PresencePayload)
_emergency = msgspec.json.Decoder(EmergencyPayload)
_delivery_status = msgspec.json.Decoder(DeliveryStatusPayload)
_owntracks_header = msgspec.json.Decoder(OwnTracksHeader)
_owntracks_location = msgspec.json.Decoder(OwnTracksLocation)
_owntracks_lwt = msgspec.json.Decoder(OwnTracksLwt)
_owntracks_transition = msgspec.json.Decoder(OwnTracksTransition)


def _validation_rejection(exc: msgspec.ValidationError, element: int | None = None) -> Rejection:
    message = str(exc)
    if element is not None:
        message = (
            message.replace("`$", f"`$[{element}]")
            if "`$" in message
            else f"{message} - at `$[{element}]`"
        )
    code: RejectionCode
    if message.startswith("Object missing required field"):
        code = "missing_field"
    elif ", got `" in message:
        code = "wrong_type"
    elif "<" in message or ">" in message or "out of range" in message:
        code = "out_of_range"
    else:
        code = "invalid_value"
    return Rejection(code, message)


def _malformed(payload: bytes, exc: msgspec.DecodeError) -> RejectedError:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as bad:
        return RejectedError("not_utf8", f"payload is not UTF-8 (byte {bad.start})")
    return RejectedError("not_json", str(exc))


class MessageDecoder:
    """Decodes and validates messages for one topic prefix and clock-skew allowance.

    Stateless and cheap to call; build one per process:

        decoder = MessageDecoder(prefix=settings.topic_prefix,
                                 max_future_skew_s=settings.max_future_skew_s)
        decoded = decoder.decode(topic, payload, received_at=time.time())
    """

    def __init__(self, *, prefix: str = DEFAULT_PREFIX, max_future_skew_s: float = 300.0) -> None:
        self.prefix = prefix
        self.max_future_skew_s = max_future_skew_s
        # A fleet has a bounded set of topics; parsing each once saves a third of the time.
        self._topics: dict[str, Topic | TopicError] = {}

    def parse_topic(self, topic: str) -> Topic:
        """parse_topic with this decoder's prefix, memoised."""
        known = self._topics.get(topic)
        if known is None:
            try:
                known = parse_topic(topic, prefix=self.prefix)
            except TopicError as exc:
                known = exc
            if len(self._topics) >= TOPIC_CACHE_SIZE:
                self._topics.clear()
            self._topics[topic] = known
        if isinstance(known, TopicError):
            raise known
        return known

    def decode(self, topic: str, payload: bytes, *, received_at: float) -> Decoded:
        """Never raises for bad input: every problem becomes a Rejection in the result."""
        decoded = Decoded()
        try:
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise RejectedError(
                    "too_large",
                    f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                )
            try:
                parsed = self.parse_topic(topic)
            except TopicError as exc:
                raise RejectedError(exc.code, str(exc)) from None
            if not parsed.from_device:
                decoded.server_topic = True
                return decoded
            if not payload:
                raise RejectedError("empty", "payload is empty")
            if parsed.kind in _LOCATION_KINDS and _is_plain_object(payload):
                self._single_fix(parsed, payload, received_at + self.max_future_skew_s, decoded)
                return decoded
            bound = json_limit_violation(payload, max_bytes=MAX_PAYLOAD_BYTES)
            if bound is not None:
                raise RejectedError("too_deep", f"payload is {bound.reason}")
            if parsed.kind not in _LOCATION_KINDS and _JSON_NUL in payload:
                # PostgreSQL text and jsonb cannot hold U+0000: say so instead of failing later.
                raise RejectedError(
                    "invalid_value", "a string holds U+0000 (NUL), which cannot be stored"
                )
            if not payload.isascii():
                # msgspec passes invalid UTF-8 inside JSON strings through; check it here.
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError as bad:
                    raise RejectedError(
                        "not_utf8", f"payload is not UTF-8 (byte {bad.start})"
                    ) from None
            self._decode_payload(parsed, payload, received_at + self.max_future_skew_s, decoded)
        except RejectedError as exc:
            decoded.rejections.append(exc.rejection)
        except msgspec.ValidationError as exc:
            decoded.rejections.append(_validation_rejection(exc))
        except msgspec.DecodeError as exc:
            decoded.rejections.append(_malformed(payload, exc).rejection)
        except Exception as exc:  # total: nothing a sender controls may escape a consumer
            decoded.fixes.clear()
            decoded.events.clear()
            decoded.rejections.append(
                Rejection("decoder_error", f"cannot decode: {type(exc).__name__}: {exc}"[:500])
            )
        return decoded

    def _decode_payload(self, topic: Topic, payload: bytes, latest: float, out: Decoded) -> None:
        kind = topic.kind
        if kind is TopicKind.COURIER_LOCATION or kind is TopicKind.VEHICLE_LOCATION:
            self._locations(topic, payload, latest, out)
        elif kind is TopicKind.OWNTRACKS or kind is TopicKind.OWNTRACKS_EVENT:
            self._owntracks(topic, payload, latest, out)
        elif kind is TopicKind.PRESENCE:
            presence = _presence.decode(payload)
            time = self._time(presence.ts, latest)
            out.events.append(PresenceEvent(topic.entity_id, presence.state, time))
        elif kind is TopicKind.EMERGENCY:
            alarm = _emergency.decode(payload)
            out.events.append(
                EmergencyEvent(
                    topic.entity_id,
                    self._time(alarm.ts, latest),
                    alarm.lat,
                    alarm.lon,
                    alarm.message,
                )
            )
        elif kind is TopicKind.DELIVERY_STATUS:
            report = _delivery_status.decode(payload)
            assert topic.order_id is not None
            out.events.append(
                DeliveryStatusEvent(
                    topic.entity_id,
                    topic.order_id,
                    report.status,
                    self._time(report.ts, latest),
                    report.note,
                )
            )

    def _single_fix(self, topic: Topic, payload: bytes, latest: float, out: Decoded) -> None:
        """The common message, one fix, without the batch handling of ``_locations``."""
        item = _location.decode(payload)
        out.fixes.append(_fix(topic, item, self._time(item.ts, latest)))

    def _locations(self, topic: Topic, payload: bytes, latest: float, out: Decoded) -> None:
        try:
            decoded = _location_or_batch.decode(payload)
        except msgspec.ValidationError:
            if payload.lstrip()[:1] != b"[":
                raise
            self._batch_element_by_element(topic, payload, latest, out)
            return
        is_batch = isinstance(decoded, list)
        items = decoded if isinstance(decoded, list) else (decoded,)
        if not items:
            raise RejectedError("empty", "the batch holds no fix")
        fixes = out.fixes
        for index, item in enumerate(items):
            try:
                fix_time = self._time(item.ts, latest)
            except RejectedError as exc:
                rejection = exc.rejection
                out.rejections.append(_at_element(rejection, index) if is_batch else rejection)
                continue
            fixes.append(_fix(topic, item, fix_time))

    def _batch_element_by_element(
        self, topic: Topic, payload: bytes, latest: float, out: Decoded
    ) -> None:
        """Slow path: one element of a batch is bad, so decode each on its own."""
        for index, raw in enumerate(_raw_batch.decode(payload)):
            try:
                item = _location.decode(raw)
                fix_time = self._time(item.ts, latest)
            except msgspec.ValidationError as exc:
                out.rejections.append(_validation_rejection(exc, index))
                continue
            except RejectedError as exc:
                out.rejections.append(_at_element(exc.rejection, index))
                continue
            out.fixes.append(_fix(topic, item, fix_time))

    def _owntracks(self, topic: Topic, payload: bytes, latest: float, out: Decoded) -> None:
        message_type = _owntracks_header.decode(payload).type
        if message_type == "location":
            loc = _owntracks_location.decode(payload)
            out.fixes.append(
                Fix(
                    "courier",
                    topic.entity_id,
                    self._time(loc.tst, latest, field="tst"),
                    loc.lat,
                    loc.lon,
                    speed=_known(loc.vel, KMH_TO_MS),
                    heading=None if loc.cog is None or loc.cog < 0 else loc.cog % 360,
                    accuracy=_known(loc.acc),
                    altitude=loc.alt,
                    battery=None if loc.batt is None or not 0 <= loc.batt <= 100 else loc.batt,
                )
            )
        elif message_type == "lwt":
            lwt = _owntracks_lwt.decode(payload)
            out.events.append(
                PresenceEvent(topic.entity_id, "offline", self._time(lwt.tst, latest, field="tst"))
            )
        elif message_type == "transition":
            move = _owntracks_transition.decode(payload)
            assert topic.device is not None
            out.events.append(
                GeofenceEvent(
                    topic.entity_id,
                    topic.device,
                    move.event,
                    self._time(move.tst, latest, field="tst"),
                    move.lat,
                    move.lon,
                    _known(move.acc),
                    move.desc,
                    move.rid,
                    move.t,
                )
            )
        else:
            raise RejectedError("unsupported_type", f"unsupported type {message_type!r}")

    def _time(self, ts: float | datetime, latest: float, *, field: str = "ts") -> datetime:
        if type(ts) is float and EPOCH_2000 <= ts <= latest:
            return datetime.fromtimestamp(ts, UTC)
        epoch = ts.timestamp() if isinstance(ts, datetime) else ts
        if epoch < EPOCH_2000:
            raise RejectedError("ts_too_old", f"{field} {ts} is before 2000-01-01 - at `$.{field}`")
        if epoch > latest:
            raise RejectedError(
                "ts_in_future",
                f"{field} {ts} is more than {self.max_future_skew_s:g} s in the future"
                f" (epoch seconds or ISO 8601 expected) - at `$.{field}`",
            )
        return ts if isinstance(ts, datetime) else datetime.fromtimestamp(epoch, UTC)


def _fix(topic: Topic, item: LocationPayload, fix_time: datetime) -> Fix:
    return Fix(
        topic.source_kind,
        topic.entity_id,
        fix_time,
        item.lat,
        item.lon,
        item.speed,
        item.heading,
        item.accuracy,
        item.altitude,
        item.battery,
    )


def _is_plain_object(payload: bytes) -> bool:
    """ASCII JSON that opens one object and nests nothing inside it: the bounds of
    json_limits and the UTF-8 check cannot fail, so a single fix can skip them."""
    return (
        payload[:1] == b"{"
        and payload.count(b"{") == 1
        and b"[" not in payload
        and payload.isascii()
    )


def _known(value: float | None, scale: float = 1.0) -> float | None:
    """OwnTracks sends negative values for "unknown"."""
    return None if value is None or value < 0 else value * scale


def _at_element(rejection: Rejection, index: int) -> Rejection:
    return Rejection(rejection.code, rejection.reason.replace("`$", f"`$[{index}]"))
