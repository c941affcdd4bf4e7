"""The outgoing side of one websocket connection: frames leave in the order they were
written, without a task or a queue wake-up per frame.

A frame goes straight to the socket's transport when nothing is waiting before it and
the transport is not above its high-water mark (the common case: one `transport.write`
of pre-built bytes). Otherwise it waits in `pending`, and one flusher coroutine, alive
only while there is something pending, writes it once the transport drains.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import WSMsgType
from engineio.packet import Packet

from realtime.transport.frames import Frame, websocket_text_frame

logger = logging.getLogger(__name__)

_ENGINE_CLOSE = Frame(b"1")  # Engine.IO's CLOSE packet
CLOSE_GRACE_S = 10.0  # a closing connection that cannot flush in this long is aborted


class WebSocket(Protocol):
    """What the outbox needs of a websocket: aiohttp's `WebSocketResponse` (with
    permessage-deflate) or a `realtime.transport.connection.WebSocketConnection`."""

    @property
    def compress(self) -> int | bool: ...

    async def send_frame(
        self, message: bytes, opcode: WSMsgType, compress: int | None = None
    ) -> None: ...

    async def close(
        self, *, code: int = 1000, message: bytes = b"", drain: bool = True
    ) -> bool: ...


class Outbox:
    polling = False
    # One per connection: no instance dict (tracemalloc, `python -m bench.idle`).
    __slots__ = (
        "_ending",
        "_flusher",
        "compressed",
        "lane",
        "max_bytes",
        "max_packets",
        "on_drained",
        "pending",
        "pending_bytes",
        "protocol",
        "transport",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        transport: asyncio.Transport,
        protocol: Any,
        *,
        max_bytes: int,
        max_packets: int,
    ) -> None:
        self.websocket = websocket
        self.transport = transport
        # writing_paused and _drain_helper(): aiohttp's protocol, or the WebSocketConnection
        self.protocol = protocol
        self.compressed = bool(websocket.compress)
        self.max_bytes = max_bytes
        self.max_packets = max_packets
        self.pending: deque[bytes] | None = None  # made when first needed (most never do)
        self.pending_bytes = 0
        self.on_drained: Callable[[], None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._ending = False
        # The transport while an `update` frame may be written straight to it, else
        # None: one attribute for the fan-out's hot loop to read, kept current on each
        # change of what it depends on (`_relane`). Never with permessage-deflate.
        self.lane: asyncio.Transport | None = None
        if not self.compressed:
            # The backlog bound on what the transport holds is its high-water mark, so
            # crossing it pauses the protocol, which the lane follows.
            low, high = transport.get_write_buffer_limits()
            if high >= max_bytes:
                transport.set_write_buffer_limits(high=max_bytes - 1, low=min(low, max_bytes // 4))
            protocol.watch(self._relane)
            self._relane()

    # -- writing ------------------------------------------------------------------------

    def write(self, frame: Frame) -> None:
        """Hand one frame to the connection (the single place where an `update` leaves
        for a websocket)."""
        if self.transport.is_closing():  # gone; its read loop is about to notice
            return
        if self.compressed:
            self._queue(frame.message)
        elif self.pending or self.protocol.writing_paused:
            self._queue(frame.websocket)
        else:
            self.transport.write(frame.websocket)

    def _relane(self) -> None:
        """`lane` is the transport when a frame may be written straight to it now:
        nothing waits before it, the transport is under its high-water mark (so under
        the bound), and neither side has started to close. The fast path of `write`:
        the caller writes the frame's `websocket` bytes itself, before it suspends."""
        transport = self.transport
        blocked = (
            self.compressed
            or self._ending
            or self.pending
            or self.protocol.writing_paused
            or self.protocol.closing
            or transport.is_closing()
        )
        self.lane = None if blocked else transport

    def write_message(self, message: str | bytes) -> None:
        """An Engine.IO packet as engineio encodes it (`str`: text, `bytes`: binary)."""
        if isinstance(message, str):
            self.write(Frame(message.encode("utf-8")))
        else:  # binary attachments: never sent by this server's own events
            self._queue(message, binary=True)

    def send_packet(self, pkt: Packet) -> None:
        """An Engine.IO packet of engineio's own (an ack, a ping, the close)."""
        self.write_message(pkt.encode())

    def closed(self) -> None:
        """The Engine.IO socket closed: end the websocket once the close packet is out."""
        self.end()

    def abandon_with_close(self, last: list[Frame]) -> None:
        """`abandon`, with the Engine.IO close packet after `last`."""
        self.abandon([*last, _ENGINE_CLOSE])

    def full(self) -> bool:
        return (
            self.pending is not None and len(self.pending) >= self.max_packets
        ) or self.pending_bytes + self.transport.get_write_buffer_size() >= self.max_bytes

    def backlog_bytes(self) -> int:
        return self.pending_bytes + self.transport.get_write_buffer_size()

    def drained(self) -> bool:
        return not self.pending and not self.protocol.writing_paused

    def notify_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, as soon as nothing is pending any more."""
        if self.drained():
            asyncio.get_running_loop().call_soon(callback)
        else:
            self.on_drained = callback
            self._start_flusher()

    def _queue(self, data: bytes, binary: bool = False) -> None:
        if binary:
            # Rare: kept out of the text path; sent by aiohttp in order with the rest.
            data = b"\x00" + data
        elif self.compressed:
            data = b"\x01" + data
        if self.pending is None:
            self.pending = deque()
        self.pending.append(data)
        self.pending_bytes += len(data)
        self.lane = None
        self._start_flusher()

    def _start_flusher(self) -> None:
        if self._flusher is None and not self.transport.is_closing():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        assert self.pending is not None
        try:
            while self.pending:
                if self.protocol.writing_paused:
                    await self.protocol._drain_helper()
                data = self.pending.popleft()
                self.pending_bytes -= len(data)
                if self.compressed or data[:1] == b"\x00":
                    opcode = WSMsgType.BINARY if data[:1] == b"\x00" else WSMsgType.TEXT
                    await self.websocket.send_frame(data[1:], opcode)
                else:
                    self.transport.write(data)
        except (ConnectionError, RuntimeError) as exc:  # the connection went away
            logger.debug("outbox flush ended: %s", exc)
            self.pending.clear()
            self.pending_bytes = 0
        finally:
            self._flusher = None
            self._relane()
        if self._ending:
            await self._close()
        elif self.on_drained is not None:
            callback, self.on_drained = self.on_drained, None
            callback()

    # -- ending -------------------------------------------------------------------------

    def end(self) -> None:
        """Close the websocket once what is pending has been written (idempotent)."""
        if self._ending:
            return
        self._ending = True
        self.on_drained = None
        self.lane = None
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._close())

    def abandon(self, last: list[Frame]) -> None:
        """Drop what is pending, write `last` (whole frames; the transport may hold part
        of one already), and close; a peer that does not read it in time is cut off."""
        self._ending = True
        self.on_drained = None
        self.lane = None
        self.pending = None
        self.pending_bytes = 0
        if self._flusher is not None:
            self._flusher.cancel()
        if self.transport.is_closing():
            return
        for frame in last:
            self.transport.write(websocket_text_frame(frame.message))
        self.transport.close()
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self.transport.abort)

    async def _close(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                await self.websocket.close()
        except TimeoutError:
            self.transport.abort()
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("websocket close: %s", exc)
