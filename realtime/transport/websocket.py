"""The websocket protocol (RFC 6455) as this server speaks it once aiohttp has handed a
connection over (`realtime.transport.connection`): the handshake's answer, reading the frames a
client sends, and the frames the server writes besides pre-built `update`s. No
extensions (permessage-deflate connections stay with aiohttp's websocket).

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Mapping

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_CONTROL = 125


class ProtocolError(Exception):
    """The client broke the protocol; the connection closes with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HandshakeError(ValueError):
    """Not a websocket handshake this server accepts (answered 400)."""


def handshake_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of the 101 answer to a client's upgrade request (its headers looked
    up case-insensitively), or HandshakeError."""
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        raise HandshakeError("not a websocket upgrade")
    connection = {token.strip().lower() for token in headers.get("Connection", "").split(",")}
    if "upgrade" not in connection:
        raise HandshakeError("no Connection: upgrade")
    if headers.get("Sec-WebSocket-Version", "") != "13":
        raise HandshakeError("unsupported websocket version")
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise HandshakeError("bad Sec-WebSocket-Key")
    except binascii.Error:
        raise HandshakeError("bad Sec-WebSocket-Key") from None
    accept = accept_key(key)
    return {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept}


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value that answers a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def encode_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes | None = None, rsv: int = 0
) -> bytes:
    """One websocket frame (RFC 6455 section 5.2), the project's only encoder: unmasked as
    a server sends it, masked with the 4-byte `mask` as a client must."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    flag = 0x80 if mask is not None else 0
    if n < 126:
        header = struct.pack("!BB", b0, flag | n)
    elif n < 65536:
        header = struct.pack("!BBH", b0, flag | 126, n)
    else:
        header = struct.pack("!BBQ", b0, flag | 127, n)
    if mask is None:
        return header + payload
    return header + mask + unmask(payload, mask)  # masking is the same XOR


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final, unmasked server frame."""
    return encode_frame(opcode, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to what a control frame holds."""
    return frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[: _MAX_CONTROL - 2])


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR the payload with the repeated 4-byte mask (one big-integer XOR: C speed)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class FrameReader:
    """Client frames in, whole messages and control frames out, in order.

    `feed` returns `(opcode, payload)` pairs: OP_TEXT/OP_BINARY with the whole
    (reassembled, unmasked) message, or a control frame. It raises ProtocolError for
    unmasked or malformed frames and for a message over `max_message` bytes, as soon as a
    header announces it (nothing past the bound is buffered). Between frames a reader
    holds nothing but its bound: most connections sit idle with it.
    """

    __slots__ = ("_buffer", "_fragments", "_opcode", "_size", "max_message")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer: bytearray | None = None  # an incomplete frame
        self._fragments: list[bytes] | None = None  # of a fragmented message
        self._opcode = 0
        self._size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._buffer is not None:
            self._buffer += data
            buf: bytes | bytearray = self._buffer
        else:
            buf = data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extensions)")
            if not b1 & 0x80:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "a client frame must be masked")
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                (length,) = struct.unpack_from("!H", buf, pos + 2)
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                (length,) = struct.unpack_from("!Q", buf, pos + 2)
                head = 10
            self._check(fin, opcode, length)
            total = head + 4 + length
            if end - pos < total:
                break
            mask = bytes(buf[pos + head : pos + head + 4])
            payload = unmask(bytes(buf[pos + head + 4 : pos + total]), mask)
            pos += total
            message = self._assemble(fin, opcode, payload)
            if message is not None:
                out.append(message)
        if pos == end:
            self._buffer = None
        elif self._buffer is None:
            self._buffer = bytearray(buf[pos:])
        else:
            del self._buffer[:pos]
        return out

    def _check(self, fin: int, opcode: int, length: int) -> None:
        """Reject a frame from its header alone."""
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            if not fin or length > _MAX_CONTROL:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "a control frame must be short, whole")
            return
        if opcode == OP_CONTINUATION:
            if self._fragments is None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation of nothing")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._fragments is not None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "a new message inside a fragmented one")
        else:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        size = length + (self._size if opcode == OP_CONTINUATION else 0)
        if size > self.max_message:
            raise ProtocolError(CLOSE_TOO_BIG, f"message over {self.max_message} bytes")

    def _assemble(self, fin: int, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode >= OP_CLOSE:
            return opcode, payload
        if opcode != OP_CONTINUATION:
            if fin:
                return opcode, payload
            self._fragments, self._opcode, self._size = [payload], opcode, len(payload)
            return None
        assert self._fragments is not None
        self._fragments.append(payload)
        self._size += len(payload)
        if not fin:
            return None
        message = (self._opcode, b"".join(self._fragments))
        self._fragments, self._size = None, 0
        return message
