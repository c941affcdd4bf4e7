"""A lean Socket.IO client over a raw WebSocket, for load generation (the receiving end of
the data path, simulated many times over in one event loop).

One `asyncio.Protocol` per connection and no Task per message: bytes arrive in
`data_received`, frames are parsed in place and `update` events go straight to a
callback with the arrival time. This is what lets a single core receive well over
100,000 messages a second; a python-socketio client per connection manages a few
thousand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from realtime.loadtest import frames
from realtime.loadtest.frames import ProtocolError
from realtime.loadtest.stamped import open_connection as open_stamped

_time = time.time
_loads = orjson.loads
_UPDATE_START = len(frames.UPDATE_PREFIX)
_UPDATE_PREFIX = frames.UPDATE_PREFIX
_list_end = frames.update_list_end

# Callbacks get the client (a SioWebSocket or a polling.SioPolling), then their arguments.
UpdateCallback = Callable[[Any, list[Any], float], None]
CloseCallback = Callable[[Any, BaseException | None], None]


def now_ms() -> float:
    """Wall-clock milliseconds: publishers stamp events with the same clock."""
    return time.time() * 1000.0


def _noop_update(client: Any, events: list[Any], at_ms: float) -> None:
    return None


class SioWebSocket(asyncio.Protocol):
    """One simulated client: WebSocket handshake, Engine.IO open, Socket.IO connect to `/`,
    then acked `emit`s and a callback per `update` event."""

    def __init__(
        self,
        host: str,
        path: str,
        *,
        deflate: bool = True,
        on_update: UpdateCallback = _noop_update,
        on_close: CloseCallback | None = None,
        auth: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self.path = path
        self.deflate = deflate
        self.on_update = on_update
        self.on_close = on_close
        self.auth = auth
        self.key = frames.new_ws_key()
        self.transport: asyncio.Transport | None = None
        self.reader: frames.FrameReader | None = None
        self.sid: str | None = None
        self.compressed = False
        self.tag: Any = None  # free for the owner (e.g. the topic or an index)
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[BaseException | None] = loop.create_future()
        self._head = b""
        self._acks = frames.Acks()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(
            frames.handshake_request(self.host, self.path, self.key, deflate=self.deflate)
        )

    def data_received(self, data: bytes) -> None:
        self.data_received_at(data, _time() * 1000.0)

    def data_received_at(self, data: bytes, at: float) -> None:
        """Bytes that arrived at `at` (wall clock, ms: the kernel's timestamp with a
        `stamped` transport, else now)."""
        reader = self.reader
        # The hottest path: one whole, final, uncompressed text frame carrying an
        # `update` (what a read holds nearly every time), parsed without the reader.
        if reader is not None and data[0] == 0x81 and not reader.partial:
            size = len(data)
            n = data[1]
            if n < 126:
                start = 2 if n == size - 2 else 0
            else:
                start = 4 if n == 126 and size > 4 and (data[2] << 8 | data[3]) == size - 4 else 0
            if start and data.startswith(_UPDATE_PREFIX, start):
                try:
                    events = _loads(data[start + _UPDATE_START : _list_end(data)])
                except ValueError as exc:  # orjson and UTF-8 errors are ValueErrors
                    self._fail(exc)
                    return
                self.on_update(self, events, at)
                return
        try:
            if reader is None:
                reader = self._handshake(data)
                data = self._head
                self._head = b""
                if reader is None or not data:
                    return
            for opcode, payload in reader.feed(data):
                # The hot path: an `update` event, parsed straight from the frame's bytes.
                if opcode == frames.OP_TEXT and payload.startswith(frames.UPDATE_PREFIX):
                    self.on_update(self, _loads(payload[_UPDATE_START : _list_end(payload)]), at)
                else:
                    self._on_frame(opcode, payload)
        except (ProtocolError, ValueError) as exc:  # orjson and UTF-8 errors are ValueErrors
            self._fail(exc)

    def _handshake(self, data: bytes) -> frames.FrameReader | None:
        """Read the HTTP 101 answer; afterwards `self._head` holds the first frame bytes."""
        self._head += data
        response = frames.parse_handshake_response(self._head)
        if response is None:
            return None
        self.compressed = frames.check_upgrade(response, self.key)
        extensions = response.headers.get("sec-websocket-extensions", "")
        self.reader = frames.FrameReader(
            deflate=self.compressed,
            reset_per_message=frames.deflate_resets_per_message(extensions),
        )
        self._head = response.rest
        return self.reader

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == frames.OP_TEXT:
            self._on_text(payload.decode("utf-8"))
        elif opcode == frames.OP_PING:
            self._write(payload, frames.OP_PONG)
        elif opcode == frames.OP_CLOSE:
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        reason: BaseException | None = exc
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("connection closed during handshake"))
            self.ready.exception()  # retrieved here: the owner may no longer wait for it
        self._acks.fail_all()
        if not self.closed.done():
            self.closed.set_result(reason)
        if self.on_close is not None:
            self.on_close(self, reason)

    # -- Engine.IO / Socket.IO ------------------------------------------------------------

    def _on_text(self, text: str) -> None:
        kind = text[:1]
        if kind == frames.EIO_PING:
            self._write(frames.EIO_PONG.encode())
        elif kind == frames.EIO_MESSAGE:
            self._on_sio(frames.parse_sio(text[1:]))
        elif kind == frames.EIO_OPEN:
            frames.eio_open(text)
            self._write(frames.sio_connect(self.auth).encode())
        elif kind == frames.EIO_CLOSE:
            self.abort()

    def _on_sio(self, packet: frames.SioPacket) -> None:
        if packet.kind == frames.SIO_CONNECT:
            self.sid = (packet.data or {}).get("sid")
            if not self.ready.done():
                self.ready.set_result(None)
        elif packet.kind == frames.SIO_ACK:
            self._acks.answered(packet)
        elif packet.kind == frames.SIO_CONNECT_ERROR:
            self._fail(ConnectionRefusedError(f"Socket.IO connect refused: {packet.data}"))
        elif packet.kind == frames.SIO_DISCONNECT:
            self.abort()
        elif (
            packet.kind == frames.SIO_EVENT
            and isinstance(packet.data, list)
            and len(packet.data) > 1
            and packet.data[0] == "update"
        ):  # an `update` the hot path did not recognise (e.g. a namespace prefix)
            self.on_update(self, packet.data[1], now_ms())

    def _write(self, payload: bytes, opcode: int = frames.OP_TEXT) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frames.client_frame(payload, opcode))

    def _fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()
        if not self.closed.done():
            self.closed.set_result(exc)
        self.abort()

    # -- public ---------------------------------------------------------------------------

    async def call(self, event: str, *args: Any, timeout: float = 10.0) -> Any:
        """Emit `event` with an ack id and wait for the ack's first argument."""
        return await self._acks.call(
            lambda text: self._write(text.encode()), event, *args, timeout=timeout
        )

    @property
    def is_open(self) -> bool:
        return self.ready.done() and not self.closed.done()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close politely: Socket.IO disconnect, then the TCP connection."""
        if self.transport is not None and not self.transport.is_closing():
            self._write(b"41")
            self._write(b"\x03\xe8", frames.OP_CLOSE)
            self.transport.close()


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, Engine.IO websocket path) of a server's base URL (http or https)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws"):
        raise ValueError(f"only http:// (or ws://) URLs are supported, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    port = parts.port or 80
    base = parts.path.rstrip("/")
    return parts.hostname, port, f"{base}/socket.io/?EIO=4&transport=websocket"


async def connect(
    url: str,
    *,
    deflate: bool = True,
    on_update: UpdateCallback = _noop_update,
    on_close: CloseCallback | None = None,
    timeout: float = 10.0,
    auth: dict[str, Any] | None = None,
    stamped: bool = False,
    local_host: str | None = None,
) -> SioWebSocket:
    """Open one client and wait until Socket.IO connected it to namespace `/`.

    `stamped`: read with the kernel's receive timestamps, so `on_update` gets the time
    the bytes arrived rather than the time this process handled them (Linux; see
    `realtime.loadtest.stamped`). `local_host`: the source address (e.g. 127.0.0.2: each
    source address has its own ~28,000 ephemeral ports, which a storm of reconnects
    can use up)."""
    host, port, path = split_url(url)
    loop = asyncio.get_running_loop()
    protocol = SioWebSocket(
        f"{host}:{port}", path, deflate=deflate, on_update=on_update, on_close=on_close, auth=auth
    )
    transport: Any = None  # uvloop's transport or a StampedTransport: both have abort()
    try:
        async with asyncio.timeout(timeout):
            if stamped:
                transport = await open_stamped(host, port, protocol)
            else:
                local = None if local_host is None else (local_host, 0)
                transport, _ = await loop.create_connection(
                    lambda: protocol, host, port, local_addr=local
                )
            await protocol.ready
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
    return protocol
