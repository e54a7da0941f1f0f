"""One browser WebSocket: authentication, the frames a browser sends, and the race between
the outgoing stream and the incoming listener (whichever ends first cancels the other)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
from msgspec import UNSET, UnsetType
from starlette.types import Message
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
from bridge.policy import Forbidden
from protocol.client_frames import (
    AuthFrame,
    ClientFrameError,
    DecodedFrame,
    PingFrame,
    SubscribeFrame,
    UnsubscribeFrame,
    decode_client_frame,
    frame_type,
    metrics_label,
)
from protocol.frames import (
    AuthOkFrame,
    ErrorFrame,
    PongFrame,
    ReauthRequiredFrame,
)

log = logging.getLogger("bridge.session")

MAX_CHANNELS_PER_CLIENT = 200
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
    async def _receive(self) -> DecodedFrame | None:
        """The next frame, typed or the error that answers it; None to ignore it silently."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise Disconnected
        return self._check(message)

    def _check(self, message: Message) -> DecodedFrame | None:
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_frames = now, 0
        self._window_frames += 1
        excess = self._window_frames - self.limits.max_frames_per_s
        if excess > 0:
            if excess == 1:
                return ClientFrameError(
                    code="rate_limited",
                    message=f"more than {self.limits.max_frames_per_s} frames in one second; "
                    "the rest of this second's frames are ignored",
                )
            # One error frame per second is enough; answering each would amplify a flood.
            self.metrics.refused.labels("rate_limited").inc()
            return None
        text = message.get("text")
        if text is None:
            return ClientFrameError(
                code="binary_frame", message="send JSON text frames, not binary ones"
            )
        limit = self.limits.max_frame_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            return ClientFrameError(
                code="too_large", message=f"frames are limited to {limit} bytes"
            )
        raw = text.encode("utf-8", errors="surrogatepass")
        frame = decode_client_frame(raw, max_bytes=limit, max_depth=MAX_FRAME_DEPTH)
        label = metrics_label(frame)
        if label is not None:
            self.metrics.frames_in.labels(label).inc()
        return frame

    def reject(self, frame: ClientFrameError) -> None:
        self.error(frame.code, frame.message, channel=frame.channel, reason=frame.reason)

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
                if frame is None or (isinstance(frame, ClientFrameError) and frame.type is None):
                    if frame is not None:
                        self.reject(frame)
                    # No sender runs before auth: the error that answers it goes out now.
                    for queued in self.client.take_control():
                        await self._send_text(queued)
                    continue
                if frame_type(frame) != "auth":
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

    async def _verify(self, frame: DecodedFrame) -> Principal | None:
        if not isinstance(frame, AuthFrame):  # an auth frame without a token
            assert isinstance(frame, ClientFrameError)
            self.reject(frame)
            return None
        try:
            return await self.verifier.verify_async(frame.token)
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

    async def _handle_safely(self, frame: DecodedFrame) -> None:
        """One frame's failure (the database down during a subscribe, a bug) is answered
        and counted; it does not end the socket."""
        try:
            await self._handle(frame)
        except (Disconnected, WebSocketDisconnect):
            raise
        except Exception:
            log.exception("handling a %s frame failed", str(frame_type(frame))[:32])
            self.error("internal_error", "the server could not handle this frame; try again")

    async def _handle(self, frame: DecodedFrame) -> None:
        kind = frame_type(frame)
        if isinstance(frame, PingFrame):
            self.client.push_control(PongFrame(id=frame.id))
        elif kind == "auth":
            await self._reauthenticate(frame)
        elif isinstance(frame, UnsubscribeFrame):
            self.hub.unsubscribe(self.client, frame.channel)
        elif kind == "subscribe" and len(self.client.channels) >= MAX_CHANNELS_PER_CLIENT:
            # Checked before the channel's name, as ever.
            self.error("too_many_channels", f"at most {MAX_CHANNELS_PER_CLIENT} channels")
        elif isinstance(frame, SubscribeFrame):
            try:
                await self.hub.subscribe(self.client, frame.channel)
            except Forbidden:
                self._forbidden(frame.channel)
        else:
            assert isinstance(frame, ClientFrameError)
            self.reject(frame)

    def _forbidden(self, channel: str) -> None:
        self.client.forbidden += 1
        self.error("forbidden", "you may not subscribe to this channel", channel=channel)
        if self.client.forbidden >= self.limits.max_forbidden:
            self.client.close(CLOSE_FORBIDDEN, "forbidden")

    async def _reauthenticate(self, frame: DecodedFrame) -> None:
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
