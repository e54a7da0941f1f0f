"""The wire contract on its own: topics, decoding, validation reasons (no services needed)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from protocol import (
    Decoded,
    DeliveryStatusEvent,
    EmergencyEvent,
    GeofenceEvent,
    LocationPayload,
    MessageDecoder,
    PresenceEvent,
    TopicError,
    TopicKind,
    alerts_topic,
    assignments_topic,
    courier_location_topic,
    delivery_status_topic,
    emergency_topic,
    encode_payload,
    order_status_topic,
    owntracks_event_topic,
    owntracks_topic,
    parse_topic,
    presence_topic,
    shared_subscription,
    vehicle_location_topic,
)

NOW = time.time()
decoder = MessageDecoder(prefix="fleet", max_future_skew_s=300)


def decode(topic: str, payload: bytes) -> Decoded:
    return decoder.decode(topic, payload, received_at=NOW)


@pytest.mark.parametrize(
    ("topic", "kind", "entity", "order", "device"),
    [
        (courier_location_topic("c1"), TopicKind.COURIER_LOCATION, "c1", None, None),
        (vehicle_location_topic("v-9"), TopicKind.VEHICLE_LOCATION, "v-9", None, None),
        (presence_topic("c1"), TopicKind.PRESENCE, "c1", None, None),
        (emergency_topic("c1"), TopicKind.EMERGENCY, "c1", None, None),
        (delivery_status_topic("c1", "o_7"), TopicKind.DELIVERY_STATUS, "c1", "o_7", None),
        (owntracks_topic("c1", "phone"), TopicKind.OWNTRACKS, "c1", None, "phone"),
        (owntracks_event_topic("c1", "phone"), TopicKind.OWNTRACKS_EVENT, "c1", None, "phone"),
        (assignments_topic("c1"), TopicKind.ASSIGNMENTS, "c1", None, None),
        (order_status_topic("o1"), TopicKind.ORDER_STATUS, "o1", None, None),
        (alerts_topic("c1"), TopicKind.ALERTS, "c1", None, None),
    ],
)
def test_every_topic_round_trips(
    topic: str, kind: TopicKind, entity: str, order: str | None, device: str | None
) -> None:
    parsed = parse_topic(topic)
    assert (parsed.kind, parsed.entity_id, parsed.order_id, parsed.device) == (
        kind,
        entity,
        order,
        device,
    )


def test_multi_level_prefix() -> None:
    topic = courier_location_topic("c1", prefix="acme/eu")
    assert topic == "acme/eu/couriers/c1/location"
    assert parse_topic(topic, prefix="acme/eu").kind is TopicKind.COURIER_LOCATION
    with pytest.raises(TopicError):
        parse_topic("fleet/couriers/c1/location", prefix="acme/eu")


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        ("fleet/couriers/c1/locaton", "bad_topic"),
        ("fleet/couriers/c1", "bad_topic"),
        ("fleet/couriers/c1/deliveries/o1/state", "bad_topic"),
        ("fleet/couriers/c1/orders/o1/status", "bad_topic"),
        ("elsewhere/c1", "bad_topic"),
        ("owntracks/c1", "bad_topic"),
        ("fleet/couriers/c 1/location", "bad_id"),
        ("fleet/couriers/caf\u00e9/location", "bad_id"),
        ("fleet/couriers/" + "x" * 65 + "/location", "bad_id"),
        ("owntracks/c1/ph.one", "bad_id"),
    ],
)
def test_topics_outside_the_scheme(topic: str, code: str) -> None:
    with pytest.raises(TopicError) as caught:
        parse_topic(topic)
    assert caught.value.code == code


def test_builders_refuse_bad_ids() -> None:
    with pytest.raises(TopicError, match="courier id"):
        courier_location_topic("a/b")
    assert shared_subscription("fleet/#", group="ingest") == "$share/ingest/fleet/#"


def test_native_fix_round_trip_with_units() -> None:
    sent = LocationPayload(
        lat=52.52, lon=13.405, ts=NOW, speed=8.3, heading=270, accuracy=5, altitude=34, battery=81
    )
    (fix,) = decode("fleet/vehicles/v1/location", encode_payload(sent)).fixes
    assert (fix.source_kind, fix.source_id) == ("vehicle", "v1")
    assert fix.fix_time == datetime.fromtimestamp(NOW, UTC)
    assert (fix.lat, fix.lon, fix.speed, fix.heading) == (52.52, 13.405, 8.3, 270)
    assert (fix.accuracy, fix.altitude, fix.battery) == (5, 34, 81)


def test_iso_time_keeps_its_offset() -> None:
    (fix,) = decode(
        "fleet/couriers/c1/location", b'{"lat":1,"lon":2,"ts":"2024-05-01T10:00:00.25+02:00"}'
    ).fixes
    assert fix.fix_time == datetime(2024, 5, 1, 8, 0, 0, 250000, tzinfo=UTC)
    assert fix.fix_time.utcoffset() == timedelta(hours=2)
    assert fix.speed is None


def test_batch_with_one_bad_element_keeps_the_others() -> None:
    decoded = decode(
        "fleet/vehicles/v1/location",
        b'[{"lat":1,"lon":2,"ts":1700000002},{"lat":91,"lon":2,"ts":1700000001},'
        b'{"lat":3,"lon":4,"ts":1700000000}]',
    )
    assert [f.lat for f in decoded.fixes] == [1, 3]
    (rejection,) = decoded.rejections
    assert rejection.code == "out_of_range"
    assert "$[1].lat" in rejection.reason


@pytest.mark.parametrize(
    ("payload", "code", "mentions"),
    [
        (b"", "empty", "empty"),
        (b"\xff\xfe\x00", "not_utf8", "UTF-8"),
        (b'{"lat":1,"lon":2,"ts":1700000000,"x":"\xc3\x28"}', "not_utf8", "byte 38"),
        (b"lat=1", "not_json", "malformed"),
        (b"x" * (64 * 1024 + 1), "too_large", "65536"),
        (b'{"lat":"52","lon":2,"ts":1700000000}', "wrong_type", "$.lat"),
        (b'{"lat":52,"lon":2,"ts":true}', "wrong_type", "$.ts"),
        (b'{"lon":2,"ts":1700000000}', "missing_field", "`lat`"),
        (b'{"lat":52,"lon":2}', "missing_field", "`ts`"),
        (b'{"lat":-90.5,"lon":2,"ts":1700000000}', "out_of_range", "$.lat"),
        (b'{"lat":0,"lon":180.1,"ts":1700000000}', "out_of_range", "$.lon"),
        (b'{"lat":0,"lon":0,"ts":1700000000,"speed":-1}', "out_of_range", "$.speed"),
        (b'{"lat":0,"lon":0,"ts":1700000000,"heading":360}', "out_of_range", "$.heading"),
        (b'{"lat":0,"lon":0,"ts":1700000000,"battery":101}', "out_of_range", "$.battery"),
        (b'{"lat":0,"lon":0,"ts":946684799}', "ts_too_old", "$.ts"),
        (b'{"lat":0,"lon":0,"ts":1700000000000}', "ts_in_future", "$.ts"),
        (b'{"lat":0,"lon":0,"ts":"2024-05-01T10:00:00"}', "invalid_value", "timezone"),
        (b'"hello"', "wrong_type", "object | array"),
    ],
)
def test_bad_location_payloads_name_the_reason(payload: bytes, code: str, mentions: str) -> None:
    decoded = decode("fleet/couriers/c1/location", payload)
    assert decoded.fixes == []
    (rejection,) = decoded.rejections
    assert rejection.code == code
    assert mentions in rejection.reason


def test_future_skew_is_configurable() -> None:
    payload = b'{"lat":0,"lon":0,"ts":%d}' % (NOW + 100)
    assert decode("fleet/couriers/c1/location", payload).fixes
    strict = MessageDecoder(max_future_skew_s=10)
    assert strict.decode("fleet/couriers/c1/location", payload, received_at=NOW).rejections


def test_events() -> None:
    presence = decode("fleet/couriers/c1/presence", b'{"state":"busy","ts":1700000000}')
    assert presence.events == [PresenceEvent("c1", "busy", datetime.fromtimestamp(1700000000, UTC))]
    alarm = decode("fleet/couriers/c1/emergency", b'{"ts":1700000000,"message":"flat tyre"}')
    (event,) = alarm.events
    assert isinstance(event, EmergencyEvent)
    assert (event.message, event.lat) == ("flat tyre", None)
    status = decode(
        "fleet/couriers/c1/deliveries/o9/status",
        b'{"status":"delivered","ts":"2024-01-01T12:00:00Z","note":"left at door"}',
    )
    (report,) = status.events
    assert isinstance(report, DeliveryStatusEvent)
    assert (report.order_id, report.status, report.note) == ("o9", "delivered", "left at door")
    assert report.kind == "status"
    assert report.dedup_key == "status/c1/o9/delivered"
    bad = decode("fleet/couriers/c1/deliveries/o9/status", b'{"status":"lost","ts":1700000000}')
    assert bad.rejections[0].code == "invalid_value"
    assert "$.status" in bad.rejections[0].reason


# Examples from the OwnTracks booklet (owntracks.org/booklet/tech/json and
# owntracks.org/booklet/features/waypoints), with concrete coordinates for the placeholders.
OWNTRACKS_LOCATION = (
    b'{"_type":"location","acc":75,"alt":13,"batt":81,"cog":270,"lat":48.87069,'
    b'"lon":2.34916,"t":"x","tid":"YY","tst":1376715317,"vac":10,"vel":54,"conn":"w"}'
)
OWNTRACKS_TRANSITION = (
    b'{"_type":"transition","desc":"My favorite coffee shop (Delaville)","event":"enter",'
    b'"lat":48.87069,"lon":2.34916,"rid":"f7676c","tid":"j1","tst":1707057574,"wtst":1610104395}'
)


def test_owntracks_location_units() -> None:
    (fix,) = decode("owntracks/c7/phone", OWNTRACKS_LOCATION).fixes
    assert (fix.source_kind, fix.source_id) == ("courier", "c7")
    assert fix.fix_time == datetime(2013, 8, 17, 4, 55, 17, tzinfo=UTC)
    assert fix.speed == pytest.approx(15.0)  # 54 km/h
    assert (fix.heading, fix.accuracy, fix.altitude, fix.battery) == (270, 75, 13, 81)


def test_owntracks_without_tid_and_with_unknown_values() -> None:
    payload = b'{"_type":"location","lat":1,"lon":2,"tst":1700000000,"vel":-1,"cog":-1,"x":[1]}'
    (fix,) = decode("owntracks/c7/phone", payload).fixes
    assert (fix.speed, fix.heading) == (None, None)


@pytest.mark.parametrize("field", ["acc", "alt", "vel", "cog"])
def test_owntracks_values_the_database_could_not_hold_are_out_of_range(field: str) -> None:
    payload = b'{"_type":"location","lat":1,"lon":2,"tst":1700000000,"%s":1e300}' % field.encode()
    decoded = decode("owntracks/c7/phone", payload)
    assert decoded.fixes == []
    assert [r.code for r in decoded.rejections] == ["out_of_range"]
    assert f"$.{field}" in decoded.rejections[0].reason


def test_owntracks_lwt_transition_and_others() -> None:
    (lwt,) = decode("owntracks/c7/phone", b'{"_type":"lwt","tst":1376715317}').events
    assert lwt == PresenceEvent("c7", "offline", datetime(2013, 8, 17, 4, 55, 17, tzinfo=UTC))
    (move,) = decode("owntracks/c7/phone/event", OWNTRACKS_TRANSITION).events
    assert isinstance(move, GeofenceEvent)
    assert (move.event, move.region, move.region_id) == (
        "enter",
        "My favorite coffee shop (Delaville)",
        "f7676c",
    )
    card = decode("owntracks/c7/phone", b'{"_type":"card","name":"Jane"}')
    assert [(r.code, r.reason) for r in card.rejections] == [
        ("unsupported_type", "unsupported type 'card'")
    ]


def test_server_topics_are_skipped() -> None:
    decoded = decode("fleet/orders/o1/status", b'{"status":"assigned"}')
    assert decoded.server_topic
    assert decoded.fixes == []
    assert decoded.events == []
    assert decoded.rejections == []


def test_non_utc_offsets_compare_equal() -> None:
    tz = timezone(timedelta(hours=-5))
    payload = b'{"lat":1,"lon":2,"ts":"2024-05-01T03:00:00-05:00"}'
    (fix,) = decode("fleet/couriers/c1/location", payload).fixes
    assert fix.fix_time == datetime(2024, 5, 1, 3, 0, tzinfo=tz)


def test_json_limits_see_brackets_only_outside_strings() -> None:
    from protocol.json_limits import json_limit_violation, nesting_depth

    assert nesting_depth(b'{"a": "[[[[[[", "b": [1, {"c": 2}]}') == 3
    assert nesting_depth(b'["\\"[[[[", [[]]]') == 3
    assert json_limit_violation(b"[" * 40 + b"]" * 40, max_bytes=1000) is not None
    assert json_limit_violation(b"[" * 32 + b"]" * 32, max_bytes=1000) is None
    # Escaped quotes and an unterminated string: still decided (a linear scan).
    hostile = b'"' + b'\\"' * 8000 + b"[" * 40
    assert json_limit_violation(hostile, max_bytes=65536) is None
    too_big = json_limit_violation(b"[" * 70_000, max_bytes=65536)
    assert too_big is not None
    assert too_big.code == "too_large"
