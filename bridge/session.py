"""One browser WebSocket: authentication, the frames a browser sends, and the race between
the outgoing stream and the incoming listener (whichever ends first cancels the other)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from msgspec import UNSET, UnsetType
from starlette.websockets import WebSocket, WebSocketDisconnect

from auth import AuthError, Principal, Verifier
from bridge.client import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHENTICATED,
    Client,
    ClientLimits,
)
from bridge.hub import Hub
from bridge.metrics import BridgeMetrics
from bridge.policy import BadChannel, Forbidden
from protocol.frames import (
    AuthOkFrame,
    ErrorFrame,
    PongFrame,
    ReauthRequiredFrame,
)
from protocol.json_limits import json_limit_violation

log = logging.getLogger("bridge.session")

_decoder = msgspec.json.Decoder()
MAX_CHANNELS_PER_CLIENT = 200
KNOWN_FRAME_TYPES = frozenset({"auth", "subscribe", "unsubscribe", "ping"})
# No command of the browser protocol nests deeper than 2.
MAX_FRAME_DEPTH = 8


@dataclass(frozen=True, slots=True)
class SessionLimits:
    auth_timeout_s: float = 10.0
    reauth_grace_s: float = 30.0
    max_frame_bytes: int = 16 * 1024
    max_frames_per_s: int = 50
    max_forbidden: int = 3
    close_timeout_s: float = 2.0


class BadFrame(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Disconnected(Exception):
    pass


class Session:
    def __init__(
        self,
        *,
        websocket: WebSocket,
        hub: Hub,
        verifier: Verifier,
        metrics: BridgeMetrics,
        limits: SessionLimits,
        client_limits: ClientLimits,
    ) -> None:
        self.websocket = websocket
        self.hub = hub
        self.verifier = verifier
        self.metrics = metrics
        self.limits = limits
        self.client = Client(send=self._send_text, metrics=metrics, limits=client_limits)
        self._window_start = 0.0
        self._window_frames = 0
        self._refreshed = anyio.Event()

    async def _send_text(self, frame: str) -> None:
        await self.websocket.send({"type": "websocket.send", "text": frame})

    # --- frames from the browser ---------------------------------------------------------
    async def _receive(self) -> dict[str, Any] | None:
        """The next well-formed frame, None for a malformed one (already answered)."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise Disconnected
        try:
            return self._check(dict(message))
        except BadFrame as exc:
            self.error(exc.code, str(exc))
            return None

    def _check(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The frame, None to ignore it silently, or BadFrame to answer with an error."""
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_frames = now, 0
        self._window_frames += 1
        excess = self._window_frames - self.limits.max_frames_per_s
        if excess > 0:
            if excess == 1:
                raise BadFrame(
                    "rate_limited",
                    f"more than {self.limits.max_frames_per_s} frames in one second; "
                    "the rest of this second's frames are ignored",
                )
            # One error frame per second is enough; answering each would amplify a flood.
            self.metrics.refused.labels("rate_limited").inc()
            return None
        text = message.get("text")
        if text is None:
            raise BadFrame("binary_frame", "send JSON text frames, not binary ones")
        limit = self.limits.max_frame_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            raise BadFrame("too_large", f"frames are limited to {limit} bytes")
        raw = text.encode("utf-8", errors="surrogatepass")
        bound = json_limit_violation(raw, max_bytes=limit, max_depth=MAX_FRAME_DEPTH)
        if bound is not None:
            raise BadFrame(bound.code, f"the frame is {bound.reason}")
        try:
            frame = _decoder.decode(raw)
        except (msgspec.DecodeError, ValueError, RecursionError):
            raise BadFrame("bad_json", "the frame is not JSON") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise BadFrame("bad_frame", 'a frame is a JSON object with a "type"')
        kind = frame["type"]
        self.metrics.frames_in.labels(kind if kind in KNOWN_FRAME_TYPES else "unknown").inc()
        return frame

    def error(
        self, code: str, message: str, *, channel: Any = UNSET, reason: str | UnsetType = UNSET
    ) -> None:
        self.metrics.refused.labels(code).inc()
        self.client.push_control(
            ErrorFrame(code=code, message=message, channel=channel, reason=reason)
        )

    # --- the connection --------------------------------------------------------------------
    async def run(self) -> None:
        await self.websocket.accept()
        self.hub.connected(self.client)
        try:
            if await self._authenticate_first():
                await self._serve()
        except (Disconnected, WebSocketDisconnect):
            pass
        finally:
            self.hub.disconnected(self.client)
        await self._close()

    async def _close(self) -> None:
        code = self.client.close_code
        if code is None:
            return
        with anyio.move_on_after(self.limits.close_timeout_s):
            # Whatever is queued (e.g. the error frame that explains the close) goes first.
            try:
                for frame in self.client.take_control():
                    await self._send_text(frame)
                await self.websocket.close(code, self.client.close_reason)
            except (OSError, RuntimeError, WebSocketDisconnect):
                pass

    async def _authenticate_first(self) -> bool:
        with anyio.move_on_after(self.limits.auth_timeout_s):
            while True:
                frame = await self._receive()
                if frame is None:
                    # No sender runs before auth: the error that answers it goes out now.
                    for queued in self.client.take_control():
                        await self._send_text(queued)
                    continue
                if frame["type"] != "auth":
                    self.error("auth_required", 'the first frame must be {"type":"auth",...}')
                    self.client.close(CLOSE_UNAUTHENTICATED, "auth_required")
                    return False
                principal = await self._verify(frame)
                if principal is None:
                    self.client.close(CLOSE_UNAUTHENTICATED, "auth_failed")
                    return False
                previous = self.client.role
                self.client.principal = principal
                self.hub.authenticated(self.client, previous)
                self._auth_ok(principal)
                return True
        self.error("auth_timeout", f"no auth frame within {self.limits.auth_timeout_s:g} s")
        self.client.close(CLOSE_UNAUTHENTICATED, "auth_timeout")
        return False

    async def _verify(self, frame: dict[str, Any]) -> Principal | None:
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            self.error("auth_failed", "the auth frame needs a token", reason="missing_token")
            return None
        try:
            return await self.verifier.verify_async(token)
        except AuthError as exc:
            self.error("auth_failed", str(exc), reason=exc.reason)
            return None
        except Exception as exc:  # whatever a token holds, it never ends the session
            log.info("an unreadable token was refused: %s: %s", type(exc).__name__, exc)
            self.error("auth_failed", "the token cannot be read", reason="malformed")
            return None

    def _auth_ok(self, principal: Principal) -> None:
        self.client.push_control(
            AuthOkFrame(
                uid=principal.uid,
                role=principal.role,
                courier_id=principal.courier_id,
                restaurant_id=principal.restaurant_id,
                expires_at=principal.expires_at,
            )
        )

    async def _serve(self) -> None:
        async with anyio.create_task_group() as group:
            self.client.set_abort(group.cancel_scope.cancel)

            async def race(coroutine: Any) -> None:
                try:
                    await coroutine
                finally:
                    group.cancel_scope.cancel()

            group.start_soon(race, self.client.run_sender(), name="stream")
            group.start_soon(race, self._listen(), name="listener")
            group.start_soon(race, self._watch_expiry(), name="expiry")
        self.client.set_abort(None)

    async def _listen(self) -> None:
        try:
            while True:
                frame = await self._receive()
                if frame is not None:
                    await self._handle_safely(frame)
        except (Disconnected, WebSocketDisconnect):
            return

    async def _handle_safely(self, frame: dict[str, Any]) -> None:
        """One frame's failure (the database down during a subscribe, a bug) is answered
        and counted; it does not end the socket."""
        try:
            await self._handle(frame)
        except (Disconnected, WebSocketDisconnect):
            raise
        except Exception:
            log.exception("handling a %s frame failed", str(frame.get("type"))[:32])
            self.error("internal_error", "the server could not handle this frame; try again")

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ping":
            self.client.push_control(PongFrame(id=frame.get("id")))
        elif kind == "auth":
            await self._reauthenticate(frame)
        elif kind in ("subscribe", "unsubscribe"):
            channel = frame.get("channel")
            try:
                if kind == "unsubscribe":
                    self.hub.unsubscribe(self.client, str(channel))
                elif len(self.client.channels) >= MAX_CHANNELS_PER_CLIENT:
                    self.error("too_many_channels", f"at most {MAX_CHANNELS_PER_CLIENT} channels")
                else:
                    await self.hub.subscribe(self.client, str(channel))
            except BadChannel as exc:
                self.error("bad_channel", str(exc), channel=channel)
            except Forbidden:
                self._forbidden(str(channel))
        else:
            self.error(
                "unknown_type",
                f"unknown frame type {kind[:32]!r}; use auth, subscribe, unsubscribe or ping",
            )

    def _forbidden(self, channel: str) -> None:
        self.client.forbidden += 1
        self.error("forbidden", "you may not subscribe to this channel", channel=channel)
        if self.client.forbidden >= self.limits.max_forbidden:
            self.client.close(CLOSE_FORBIDDEN, "forbidden")

    async def _reauthenticate(self, frame: dict[str, Any]) -> None:
        principal = await self._verify(frame)
        current = self.client.principal
        if principal is None or current is None:
            return
        same = (principal.uid, principal.role, principal.courier_id, principal.restaurant_id)
        if same != (current.uid, current.role, current.courier_id, current.restaurant_id):
            self.error("identity_changed", "a fresh token must be for the same user and role")
            return
        self.client.principal = principal
        self._refreshed.set()
        self._auth_ok(principal)
        if self.client.suspended:
            # Data resumes with a fresh snapshot of each channel: what changed during the
            # grace was not sent.
            self.client.resume()
            await self.hub.refresh_snapshots(self.client)

    async def _watch_expiry(self) -> None:
        while True:
            principal = self.client.principal
            assert principal is not None
            self._refreshed = anyio.Event()
            remaining = principal.expires_at - time.time()
            with anyio.move_on_after(max(remaining, 0)):
                await self._refreshed.wait()
                continue
            self.client.push_control(ReauthRequiredFrame(grace_s=self.limits.reauth_grace_s))
            self.client.suspend()
            with anyio.move_on_after(self.limits.reauth_grace_s):
                await self._refreshed.wait()
                continue
            self.error("auth_expired", "the token expired and no fresh auth frame arrived")
            self.client.close(CLOSE_UNAUTHENTICATED, "token_expired")
            return
