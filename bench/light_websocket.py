"""A minimal RFC 6455 client as an asyncio Protocol, for load generation.

A full client library costs tens of microseconds per frame in Python; with thousands of
sockets in one process the measuring side, not the server, would set the figures. This one
parses server frames straight out of the receive buffer and hands each message to a callback.
The same client measures the bridge and the reference, so both pay the same client cost.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable


class HandshakeError(Exception):
    pass


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return header + mask + masked


class LightWebSocket(asyncio.Protocol):
    def __init__(self, on_message: Callable[[bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        self.on_message = on_message
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self._buffer = bytearray()
        self._open = False
        self._fragments = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._open:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[: self._buffer.find(b"\r\n")])
            if b" 101 " not in status:
                self.opened.set_exception(HandshakeError(status.decode(errors="replace")))
                if self.transport is not None:
                    self.transport.close()
                return
            del self._buffer[: end + 4]
            self._open = True
            self.opened.set_result(None)
        self._parse()

    def _parse(self) -> None:
        buffer = self._buffer
        position = 0
        size = len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
            if size - position < header + length:
                break
            payload = bytes(buffer[position + header : position + header + length])
            position += header + length
            opcode = first & 0x0F
            final = bool(first & 0x80)
            if opcode in (0, 1, 2):
                if final and not self._fragments:
                    self.on_message(payload)
                else:
                    self._fragments += payload
                    if final:
                        message = bytes(self._fragments)
                        self._fragments.clear()
                        self.on_message(message)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                if not self.closed.done():
                    self.closed.set_result(code)
                if self.transport is not None:
                    self.transport.close()
            elif opcode == 9 and self.transport is not None:
                self.transport.write(_masked_frame(0xA, payload))
        del buffer[:position]

    def send_text(self, text: str) -> None:
        if self.transport is not None:
            self.transport.write(_masked_frame(0x1, text.encode()))

    def send_binary(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(_masked_frame(0x2, data))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_masked_frame(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()


async def open_websocket(
    host: str,
    port: int,
    path: str,
    on_message: Callable[[bytes], None],
    *,
    subprotocol: str | None = None,
) -> LightWebSocket:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: LightWebSocket(on_message), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if subprotocol:
        request += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
    assert protocol.transport is not None
    protocol.transport.write((request + "\r\n").encode())
    await protocol.opened
    return protocol
