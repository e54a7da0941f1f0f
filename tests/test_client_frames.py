"""protocol.client_frames: each raw browser frame becomes a typed frame or the error that
answers it, with the code, reason and channel the bridge sends (docs/websocket.md)."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.client_frames import (
    AuthFrame,
    ClientFrameError,
    DecodedFrame,
    PingFrame,
    SubscribeFrame,
    UnsubscribeFrame,
    decode_client_frame,
    metrics_label,
)


def decode(raw: bytes) -> DecodedFrame:
    return decode_client_frame(raw, max_bytes=16 * 1024, max_depth=8)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"type":"auth","token":"t","extra":1}', AuthFrame(token="t")),
        (b'{"type":"subscribe","channel":"order:o-1"}', SubscribeFrame(channel="order:o-1")),
        (b'{"type":"unsubscribe","channel":"fleet"}', UnsubscribeFrame(channel="fleet")),
        (b'{"type":"ping","id":[1]}', PingFrame(id=[1])),
        (b'{"type":"ping"}', PingFrame(id=None)),
    ],
)
def test_frames(raw: bytes, expected: DecodedFrame) -> None:
    assert decode(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code", "label", "extra"),
    [
        (b"not json", "bad_json", None, {}),
        (b"[1]", "bad_frame", None, {}),
        (b'{"type":1}', "bad_frame", None, {}),
        (b"[" * 9 + b"]" * 9, "too_deep", None, {}),
        (b'{"type":"auth"}', "auth_failed", "auth", {"reason": "missing_token"}),
        (b'{"type":"auth","token":""}', "auth_failed", "auth", {"reason": "missing_token"}),
        (b'{"type":"subscribe"}', "bad_channel", "subscribe", {"channel": None}),
        (b'{"type":"unsubscribe","channel":7}', "bad_channel", "unsubscribe", {"channel": 7}),
        (b'{"type":"subscribe","channel":"order:"}', "bad_channel", "subscribe", {}),
        (b'{"type":"nope"}', "unknown_type", "unknown", {}),
    ],
)
def test_errors(raw: bytes, code: str, label: str | None, extra: dict[str, Any]) -> None:
    error = decode(raw)
    assert isinstance(error, ClientFrameError)
    assert error.code == code
    assert metrics_label(error) == label
    for name, value in extra.items():
        assert getattr(error, name) == value


@pytest.mark.parametrize(
    ("raw", "codes"),
    [
        (b"[" * 100_000 + b"]" * 100_000, {"too_large"}),
        (b"[" * 8_000 + b"]" * 8_000, {"too_deep"}),
        (b'{"type":"ping","id":' + b"[" * 8_000 + b"]" * 8_000 + b"}", {"too_deep"}),
        (b'{"type":"auth","token":"' + b"a" * 61_440 + b'"}', {"too_large"}),
        (b'{"type":"subscribe","channel":"order:o\\u0000"}', {"bad_channel"}),
        (b'{"type":"subscribe","channel":1e400}', {"bad_json"}),
        (b'{"type":"ping","id":-1e400}', {"bad_json"}),
        (b'{"type":"auth","token":"\\ud800"}', {"bad_json"}),
        (b'{"type":"auth","token":"\xff"}', {"bad_json"}),
        (b'{"type":"auth"}\x00', {"bad_json"}),
        (b"\x00" * 1000, {"bad_json"}),
    ],
)
def test_hostile_frames_are_answered_not_raised(raw: bytes, codes: set[str]) -> None:
    error = decode(raw)
    assert isinstance(error, ClientFrameError)
    assert error.code in codes, error
