"""protocol.server_topics: what the API encodes decodes back, and any hostile payload on a
server topic becomes InvalidServerMessage with a metrics label, never another exception."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from protocol.server_topics import (
    AlertMessage,
    AssignmentMessage,
    InvalidServerMessage,
    OrderStatusMessage,
    Stop,
    decode_alert,
    decode_assignment,
    decode_status,
)
from protocol.statuses import Status

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
STATUS = OrderStatusMessage(
    event="status",
    order_id="o1",
    status=Status.DELIVERED,
    previous_status=Status.OUT_FOR_DELIVERY,
    courier_id="c1",
    restaurant_id="r1",
    customer_uid="alice",
    eta=None,
    ts=NOW,
    actor="courier",
    note="at the door",
    version=4,
)
ASSIGNMENT = AssignmentMessage(
    type="assignment",
    order_id="o1",
    courier_id="c1",
    restaurant_id="r1",
    pickup=Stop(lat=52.5, lon=13.4),
    dropoff=Stop(lat=52.6, lon=13.5),
    promised_at=NOW,
    ts=NOW,
    version=2,
)
ALERT = AlertMessage(
    type="alert_raised",
    alert_id=7,
    courier_id="c1",
    raised_at=NOW,
    lat=52.5,
    lon=13.4,
    message="at the door",
)
Decoder = Callable[[str, bytes], object]
CASES: list[tuple[Decoder, str, bytes]] = [
    (decode_status, "o1", STATUS.encode()),
    (decode_assignment, "c1", ASSIGNMENT.encode()),
    (decode_alert, "c1", ALERT.encode()),
]


@pytest.mark.parametrize(("decode", "topic_id", "payload"), CASES)
def test_what_the_api_encodes_decodes_back(decode: Decoder, topic_id: str, payload: bytes) -> None:
    assert decode(topic_id, payload).encode() == payload  # type: ignore[attr-defined]


@pytest.mark.parametrize(("decode", "topic_id", "payload"), CASES)
def test_a_payload_for_another_topic_is_refused(
    decode: Decoder, topic_id: str, payload: bytes
) -> None:
    with pytest.raises(InvalidServerMessage) as refused:
        decode(topic_id + "x", payload)
    assert refused.value.reason == "id_mismatch"


def hostile(valid: bytes) -> list[tuple[bytes, set[str]]]:
    """Each payload with the reasons it may be refused for."""
    text_field = b'"at the door"'
    return [
        (b"[" * 100_000 + b"]" * 100_000, {"too_large"}),
        (b"[" * 30_000 + b"]" * 30_000, {"too_deep"}),
        (valid[:-1] + b',"x":' + b"[" * 30_000 + b"]" * 30_000 + b"}", {"too_deep"}),
        (valid.replace(text_field, b'"' + b"a" * 61_440 + b'"'), {"ok"}),
        (valid.replace(text_field, b'"' + b"a" * 70_000 + b'"'), {"too_large"}),
        (valid.replace(text_field, b'"\\ud800"'), {"not_json"}),
        (valid.replace(text_field, b'"\xff\xfe"'), {"not_json"}),
        (valid + b"\x00", {"not_json"}),
        (valid.replace(b'"c1"', b'"c\\u0000"', 1), {"bad_id"}),
        (valid.replace(b'"o1"', b'"o\\u0000"', 1), {"bad_id"}),
        (valid.replace(b"52.5", b"1e400", 1), {"bad_field", "ok"}),
        (valid[:-1] + b',"version":1e400}', {"bad_field", "unknown_field"}),
        (b"1e400", {"bad_field", "bad_shape"}),
        (b"", {"not_json"}),
        (b"\x00" * 1000, {"not_json"}),
    ]


def outcome(decode: Decoder, topic_id: str, raw: bytes) -> str:
    """ "ok", or the label of the refusal; any other exception fails the test."""
    try:
        decode(topic_id, raw)
    except InvalidServerMessage as exc:
        return exc.reason
    return "ok"


@pytest.mark.parametrize(("decode", "topic_id", "payload"), CASES)
def test_hostile_payloads_are_refused_with_a_label(
    decode: Decoder, topic_id: str, payload: bytes
) -> None:
    for raw, reasons in hostile(payload):
        if raw == payload:
            continue  # the field this case breaks is not in this message
        assert outcome(decode, topic_id, raw) in reasons, raw[:80]
