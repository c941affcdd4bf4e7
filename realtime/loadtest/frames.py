"""Wire frames of a simulated client, pure and I/O-free: the WebSocket handshake and frames
(RFC 6455, with permessage-deflate as browsers offer it), Engine.IO v4 packets and
Socket.IO v5 packets.

The load generator speaks these itself instead of running a python-socketio client per
connection, so one core can receive well over 100,000 messages a second.
"""

from __future__ import annotations

import asyncio
import base64
import os
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from realtime.core import jsoncodec
from realtime.transport.websocket import OP_BINARY as OP_BINARY  # RFC 6455's, for the clients here
from realtime.transport.websocket import OP_CLOSE as OP_CLOSE
from realtime.transport.websocket import OP_CONTINUATION as OP_CONTINUATION
from realtime.transport.websocket import OP_PING as OP_PING
from realtime.transport.websocket import OP_PONG as OP_PONG
from realtime.transport.websocket import OP_TEXT as OP_TEXT
from realtime.transport.websocket import accept_key, encode_frame

DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
_DEFLATE_TAIL = b"\x00\x00\xff\xff"

# Engine.IO v4 packet types (first character of a text frame or polling packet).
EIO_OPEN = "0"
EIO_CLOSE = "1"
EIO_PING = "2"
EIO_PONG = "3"
EIO_MESSAGE = "4"
EIO_NOOP = "6"
POLLING_SEPARATOR = "\x1e"

# Socket.IO v5 packet types (the character after Engine.IO's "4").
SIO_CONNECT = "0"
SIO_DISCONNECT = "1"
SIO_EVENT = "2"
SIO_ACK = "3"
SIO_CONNECT_ERROR = "4"


class ProtocolError(ValueError):
    """The peer sent something this client cannot understand."""


# -- WebSocket handshake ------------------------------------------------------------------


def new_ws_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def ws_accept(key: str) -> str:
    """The Sec-WebSocket-Accept value a server must answer to `key`."""
    return accept_key(key)


def handshake_request(host: str, path: str, key: str, *, deflate: bool) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append(f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass
class HandshakeResponse:
    status: int
    headers: dict[str, str]
    rest: bytes  # bytes after the header block: the first WebSocket frames


def parse_handshake_response(buffer: bytes) -> HandshakeResponse | None:
    """The server's HTTP answer, or None while its header block is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP response: {head[0]!r}")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return HandshakeResponse(int(parts[1]), headers, buffer[end + 4 :])


def check_upgrade(response: HandshakeResponse, key: str) -> bool:
    """Validate a 101 answer; returns whether permessage-deflate was accepted."""
    if response.status != 101:
        raise ProtocolError(f"websocket upgrade refused: HTTP {response.status}")
    if response.headers.get("sec-websocket-accept") != ws_accept(key):
        raise ProtocolError("websocket upgrade answered with a wrong Sec-WebSocket-Accept")
    extensions = response.headers.get("sec-websocket-extensions", "")
    return "permessage-deflate" in extensions


def deflate_resets_per_message(extensions: str) -> bool:
    return "server_no_context_takeover" in extensions


# -- WebSocket frames ---------------------------------------------------------------------


def client_frame(payload: bytes, opcode: int = OP_TEXT, mask_key: bytes | None = None) -> bytes:
    """One final, masked client-to-server frame (clients must mask, RFC 6455 5.3)."""
    return encode_frame(opcode, payload, mask=mask_key if mask_key is not None else os.urandom(4))


def server_frame(payload: bytes, opcode: int = OP_TEXT, *, fin: bool = True) -> bytes:
    """An unmasked server-to-client frame (for tests and fakes)."""
    return encode_frame(opcode, payload, fin=fin)


@dataclass
class FrameReader:
    """Incremental parser of server-to-client frames.

    `feed` returns the complete messages as (opcode, payload): text and binary messages
    reassembled from fragments and inflated when permessage-deflate is on, control frames
    (ping, pong, close) as they come.
    """

    deflate: bool = False
    reset_per_message: bool = False
    max_message: int = 64 * 1024 * 1024
    _buffer: bytearray = field(default_factory=bytearray)
    _fragments: list[bytes] = field(default_factory=list)
    _fragment_opcode: int = 0
    _fragment_compressed: bool = False
    _inflater: Any = None

    @property
    def partial(self) -> bool:
        """Whether a frame or a fragmented message is waiting for more bytes."""
        return bool(self._buffer or self._fragments)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if not self._buffer and len(data) > 2 and data[0] == 0x81:  # hot: one small text frame
            length = data[1]
            if length < 126:
                if len(data) == length + 2:
                    return [(OP_TEXT, data[2:])]
            elif length == 126 and len(data) >= 4 and len(data) == ((data[2] << 8) | data[3]) + 4:
                return [(OP_TEXT, data[4:])]
        if self._buffer:  # a frame was split across reads: continue it
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        out: list[tuple[int, bytes]] = []
        pos = 0
        size = len(data)
        while size - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1]
            start = pos + 2
            if length & 0x80:
                raise ProtocolError("server frames must not be masked")
            if length == 126:
                if size - start < 2:
                    break
                length = (data[start] << 8) | data[start + 1]
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(data[start : start + 8], "big")
                start += 8
                if length > self.max_message:
                    raise ProtocolError(f"frame of {length} bytes exceeds {self.max_message}")
            end = start + length
            if end > size:
                break
            pos = end
            if b0 == 0x81:  # the hot path: a final, uncompressed text frame
                out.append((OP_TEXT, data[start:end]))
                continue
            payload = data[start:end]
            opcode = b0 & 0x0F
            if opcode >= 0x8:  # control frames are never fragmented nor compressed
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if not self._fragments:
                    raise ProtocolError("continuation frame without a message")
                self._fragments.append(payload)
                if b0 & 0x80:
                    message = b"".join(self._fragments)
                    self._fragments.clear()
                    out.append(
                        (self._fragment_opcode, self._finish(message, self._fragment_compressed))
                    )
            elif b0 & 0x80:
                out.append((opcode, self._finish(payload, bool(b0 & 0x40))))
            else:
                self._fragment_opcode = opcode
                self._fragment_compressed = bool(b0 & 0x40)
                self._fragments.append(payload)
        if pos < size:
            self._buffer += data[pos:]
        return out

    def _finish(self, payload: bytes, compressed: bool) -> bytes:
        if not compressed:
            return payload
        if not self.deflate:
            raise ProtocolError("compressed frame without permessage-deflate")
        if self._inflater is None or self.reset_per_message:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflated: bytes = self._inflater.decompress(payload + _DEFLATE_TAIL)
        return inflated


# -- Engine.IO v4 / Socket.IO v5 ----------------------------------------------------------


@dataclass(frozen=True)
class SioPacket:
    """A Socket.IO packet on namespace `/`: kind, ack id, decoded data (or None)."""

    kind: str
    ack_id: int | None
    data: Any


def parse_sio(text: str) -> SioPacket:
    """Parse the Socket.IO part of an Engine.IO message (the text after the leading "4")."""
    if not text:
        raise ProtocolError("empty Socket.IO packet")
    kind = text[0]
    if kind not in "01234":
        raise ProtocolError(f"unsupported Socket.IO packet type {kind!r}")
    pos = 1
    if text.startswith("/", pos):  # a namespace other than "/" ends with a comma
        comma = text.find(",", pos)
        if comma < 0:
            raise ProtocolError("namespace without a comma")
        pos = comma + 1
    digits = pos
    while digits < len(text) and text[digits].isdigit():
        digits += 1
    ack_id = int(text[pos:digits]) if digits > pos else None
    body = text[digits:]
    try:
        data = jsoncodec.loads(body) if body else None
    except jsoncodec.JSONDecodeError as exc:
        raise ProtocolError(f"Socket.IO packet is not JSON: {exc}") from None
    return SioPacket(kind, ack_id, data)


def sio_connect(auth: dict[str, Any] | None = None) -> str:
    """The Engine.IO message that connects namespace `/`."""
    return EIO_MESSAGE + SIO_CONNECT + (jsoncodec.dumps(auth) if auth else "")


def sio_event(name: str, *args: Any, ack_id: int | None = None) -> str:
    ack = "" if ack_id is None else str(ack_id)
    return EIO_MESSAGE + SIO_EVENT + ack + jsoncodec.dumps([name, *args])


def eio_open(text: str) -> dict[str, Any]:
    """The handshake data of an Engine.IO open packet (`0{"sid": ..., ...}`)."""
    if not text.startswith(EIO_OPEN):
        raise ProtocolError(f"expected an Engine.IO open packet, got {text[:40]!r}")
    try:
        data = jsoncodec.loads(text[1:])
    except jsoncodec.JSONDecodeError as exc:
        raise ProtocolError(f"Engine.IO open packet is not JSON: {exc}") from None
    if not isinstance(data, dict) or "sid" not in data:
        raise ProtocolError("Engine.IO open packet without a sid")
    return data


def split_polling_payload(body: str) -> list[str]:
    """Engine.IO v4 long-polling payload: packets separated by the record separator."""
    return [packet for packet in body.split(POLLING_SEPARATOR) if packet]


UPDATE_PREFIX = b'42["update",'
_UPDATE_START = len(UPDATE_PREFIX)


def update_list_end(message: bytes) -> int:
    """Where the event list of an `update` packet ends: before its closing `]`, or
    before the trailing recovery offset (`,"<offset>"]`, which holds no comma)."""
    if message.endswith(b'"]'):
        return message.rindex(b',"')
    return len(message) - 1


def update_events(message: bytes) -> list[Any] | None:
    """The event list of an `update` Socket.IO event, or None if `message` is not one.

    The hot path of the load generator: one prefix check and one JSON parse, on bytes.
    """
    if not message.startswith(UPDATE_PREFIX):
        return None
    try:
        events = orjson.loads(message[_UPDATE_START : update_list_end(message)])
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"update event is not JSON: {exc}") from None
    if not isinstance(events, list):
        raise ProtocolError("update payload is not a list")
    return events


class Acks:
    """A client's Socket.IO calls waiting for their ack (both load-test transports)."""

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._last = 0

    async def call(
        self, send: Callable[[str], Awaitable[None] | None], event: str, *args: Any, timeout: float
    ) -> Any:
        """Send `event` with a new ack id through `send`; the ack's first argument (all
        of them when there are several)."""
        self._last += 1
        ack_id = self._last
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ack_id] = future
        try:
            async with asyncio.timeout(timeout):
                sent = send(sio_event(event, *args, ack_id=ack_id))
                if sent is not None:
                    await sent
                return await future
        finally:
            self._waiting.pop(ack_id, None)

    def answered(self, packet: SioPacket) -> None:
        future = self._waiting.pop(packet.ack_id, None) if packet.ack_id is not None else None
        if future is not None and not future.done():
            args = packet.data or []
            future.set_result(args[0] if len(args) == 1 else args)

    def fail_all(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed"))
                future.exception()
        self._waiting.clear()
