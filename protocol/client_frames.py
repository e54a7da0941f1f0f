"""The frames browsers send the bridge over its WebSocket (docs/websocket.md), as msgspec
structs, and :func:`decode_client_frame`, which turns one raw text frame into one of them or
into a :class:`ClientFrameError` carrying the error frame's `code`, `message` and, where it
applies, `reason` or `channel`: it never raises.

Unknown extra fields are ignored. The bridge's own checks (frame rate, binary frames, the
size of the text) come before this; the size and depth bounds of protocol.json_limits come
first here, before any parser sees the bytes.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType

from protocol.json_limits import json_limit_violation
from protocol.topics import valid_id

__all__ = [
    "BAD_CHANNEL_MESSAGE",
    "CLIENT_FRAME_TYPES",
    "AuthFrame",
    "ChannelKind",
    "ClientFrame",
    "ClientFrameError",
    "DecodedFrame",
    "PingFrame",
    "SubscribeFrame",
    "UnsubscribeFrame",
    "channel_parts",
    "decode_client_frame",
    "frame_type",
    "metrics_label",
]

_decoder: Final = msgspec.json.Decoder()

ChannelKind = Literal["fleet", "courier", "order", "restaurant"]
BAD_CHANNEL_MESSAGE: Final = (
    "channel must be 'fleet', 'courier:<id>', 'order:<id>' or 'restaurant:<id>' with ids "
    "of 1-64 characters [A-Za-z0-9_-]"
)


def channel_parts(channel: object) -> tuple[ChannelKind, str | None] | None:
    """A channel name's kind and id (None for `fleet`), or None if it is not a channel."""
    if channel == "fleet":
        return "fleet", None
    if isinstance(channel, str) and ":" in channel:
        kind, _, entity_id = channel.partition(":")
        if valid_id(entity_id):
            if kind == "courier":
                return "courier", entity_id
            if kind == "order":
                return "order", entity_id
            if kind == "restaurant":
                return "restaurant", entity_id
    return None


class ClientFrameBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """A frame a browser sends, tagged by its `type`."""


class AuthFrame(ClientFrameBase, frozen=True, tag="auth"):
    """The first frame, and a fresh token at any time: a non-empty `token`."""

    token: str


class SubscribeFrame(ClientFrameBase, frozen=True, tag="subscribe"):
    """`channel`: a name of the channel grammar (:func:`channel_parts`)."""

    channel: str


class UnsubscribeFrame(ClientFrameBase, frozen=True, tag="unsubscribe"):
    channel: str


class PingFrame(ClientFrameBase, frozen=True, tag="ping"):
    """`id`: any JSON value, echoed by the `pong` (null if none)."""

    id: Any = None


ClientFrame = AuthFrame | SubscribeFrame | UnsubscribeFrame | PingFrame
CLIENT_FRAME_TYPES: Final = frozenset(
    str(frame.__struct_config__.tag) for frame in get_args(ClientFrame)
)


class ClientFrameError(msgspec.Struct, frozen=True, kw_only=True):
    """A frame the bridge answers with an error frame. `type` is the frame's own `type`
    when it had a string one (None for one that is not JSON or not an object with a
    `type`); `channel` echoes the frame's channel as it came, `reason` details
    `auth_failed`."""

    code: str
    message: str
    type: str | None = None
    channel: Any = UNSET
    reason: str | UnsetType = UNSET


DecodedFrame = ClientFrame | ClientFrameError


def frame_type(decoded: DecodedFrame) -> str | None:
    """The frame's `type`, known or not; None if it had none."""
    if isinstance(decoded, ClientFrameError):
        return decoded.type
    tag = decoded.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def metrics_label(decoded: DecodedFrame) -> str | None:
    """The `type` label of `bridge_frames_in_total`: a known type or "unknown"; None for a
    frame without a `type` (not counted)."""
    kind = frame_type(decoded)
    if kind is None:
        return None
    return kind if kind in CLIENT_FRAME_TYPES else "unknown"


def decode_client_frame(raw: bytes, *, max_bytes: int, max_depth: int) -> DecodedFrame:
    """One raw frame (UTF-8 JSON) as a typed frame, or the error that answers it."""
    bound = json_limit_violation(raw, max_bytes=max_bytes, max_depth=max_depth)
    if bound is not None:
        return ClientFrameError(code=bound.code, message=f"the frame is {bound.reason}")
    try:
        obj = _decoder.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return ClientFrameError(code="bad_json", message="the frame is not JSON")
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return ClientFrameError(code="bad_frame", message='a frame is a JSON object with a "type"')
    return _typed(obj["type"], obj)


def _typed(kind: str, obj: dict[str, Any]) -> DecodedFrame:
    if kind == "ping":
        return PingFrame(id=obj.get("id"))
    if kind == "auth":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            return ClientFrameError(
                code="auth_failed",
                message="the auth frame needs a token",
                type=kind,
                reason="missing_token",
            )
        return AuthFrame(token=token)
    if kind in ("subscribe", "unsubscribe"):
        channel = obj.get("channel")
        if not isinstance(channel, str) or channel_parts(channel) is None:
            return ClientFrameError(
                code="bad_channel", message=BAD_CHANNEL_MESSAGE, type=kind, channel=channel
            )
        if kind == "subscribe":
            return SubscribeFrame(channel=channel)
        return UnsubscribeFrame(channel=channel)
    return ClientFrameError(
        code="unknown_type",
        message=f"unknown frame type {kind[:32]!r}; use auth, subscribe, unsubscribe or ping",
        type=kind,
    )
