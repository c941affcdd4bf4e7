"""A websocket after its handshake, as a bare `asyncio.Protocol`: the transport's own
callbacks read the client's frames, and no task or coroutine waits per connection.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from realtime.transport import websocket
from realtime.transport.websocket import FrameReader, ProtocolError

logger = logging.getLogger(__name__)

CLOSE_GRACE_S = 10.0  # how long a closing connection waits for the client's close frame


class Receiver(Protocol):
    def on_message(self, data: str | bytes) -> None: ...

    def on_close(self, connection: WebSocketConnection) -> None: ...


class WebSocketConnection(asyncio.Protocol):
    compress = 0  # no extensions: permessage-deflate connections stay with aiohttp
    # One per connection: no instance dict (asyncio.Protocol has none either).
    __slots__ = (
        "_abort",
        "_drain_waiter",
        "_paused",
        "_watcher",
        "closing",
        "reader",
        "receiver",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport, receiver: Receiver, max_message: int) -> None:
        self.transport = transport
        self.receiver = receiver
        self.reader = FrameReader(max_message)
        self.closing = False  # our close frame is written; waiting for the client's
        self._paused = False
        # told when writing_paused, closing or the transport's closing change (the outbox)
        self._watcher: Callable[[], None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._abort: asyncio.TimerHandle | None = None

    # -- reading ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        try:
            messages = self.reader.feed(data)
        except ProtocolError as exc:
            self.fail(exc.code, exc.reason)
            return
        for opcode, payload in messages:
            if opcode == websocket.OP_CLOSE:
                if not self.closing:
                    self.transport.write(websocket.close_frame(websocket.CLOSE_NORMAL))
                self.transport.close()
                self._changed()
                return
            if self.closing:  # what a client sends after our close frame is not read
                continue
            if opcode == websocket.OP_TEXT:
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    self.fail(websocket.CLOSE_INVALID_DATA, "text frame not UTF-8")
                    return
                self.receiver.on_message(text)
            elif opcode == websocket.OP_BINARY:
                self.receiver.on_message(payload)
            elif opcode == websocket.OP_PING:
                self.transport.write(websocket.frame(websocket.OP_PONG, payload))

    def eof_received(self) -> bool:
        return False  # the client closed its side: close ours too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._abort is not None:
            self._abort.cancel()
            self._abort = None
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
        self._changed()
        self.receiver.on_close(self)

    # -- flow control, as aiohttp's protocol has it ---------------------------------------

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever `writing_paused`, `closing` or the transport's
        `is_closing()` may have changed (the outbox keeps its fast path current)."""
        self._watcher = callback

    def _changed(self) -> None:
        if self._watcher is not None:
            self._watcher()

    def pause_writing(self) -> None:
        self._paused = True
        self._changed()

    def resume_writing(self) -> None:
        self._paused = False
        self._changed()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def writing_paused(self) -> bool:
        return self._paused

    async def _drain_helper(self) -> None:
        if self.transport.is_closing():
            raise ConnectionResetError("connection closing")
        if not self._paused:
            return
        if self._drain_waiter is None:
            self._drain_waiter = asyncio.get_running_loop().create_future()
        await self._drain_waiter

    # -- writing and closing, as aiohttp's WebSocketResponse has them ------------------------

    async def send_frame(self, message: bytes, opcode: int, compress: int | None = None) -> None:
        if self.transport.is_closing():
            raise ConnectionResetError("connection closing")
        self.transport.write(websocket.frame(opcode, message))

    async def close(
        self, *, code: int = websocket.CLOSE_NORMAL, message: bytes = b"", drain: bool = True
    ) -> bool:
        self.shut(code, message.decode("utf-8", "replace"))
        return True

    def shut(self, code: int, reason: str = "") -> None:
        """Write a close frame and close once the client answers it (or after a grace
        period: a client that does not read is cut off). Idempotent."""
        if self.closing or self.transport.is_closing():
            return
        self.closing = True
        self._changed()
        self.transport.write(websocket.close_frame(code, reason))
        self._abort = asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self.transport.abort)

    def fail(self, code: int, reason: str) -> None:
        """The client broke the protocol: a close frame, and the connection closes now
        (what follows in the stream cannot be read)."""
        logger.info("closing a websocket that broke the protocol: %s", reason)
        if not self.closing:
            self.closing = True
            self.transport.write(websocket.close_frame(code, reason))
        self.transport.close()
        self._changed()


class _HandedOver(web.StreamResponse):
    """The 101 answer. Once it is written the connection is no longer aiohttp's: there
    is no body, and nothing to end."""

    async def write_eof(self, data: bytes = b"") -> None:
        pass


async def take_over(
    request: web.BaseRequest, receiver: Receiver, max_message: int
) -> tuple[web.StreamResponse, WebSocketConnection]:
    """Answer a websocket handshake and take its connection from aiohttp: the response
    for the handler to return, and the connection. HandshakeError if the request is not
    a websocket handshake this server accepts."""
    response = _HandedOver(status=101, headers=websocket.handshake_headers(request.headers))
    response.force_close()  # no keep-alive: aiohttp serves no further request on it
    await response.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("connection lost during the handshake")
    connection = WebSocketConnection(transport, receiver, max_message)
    transport.set_protocol(connection)
    # aiohttp closes its protocol's transport when the handler returns: it has none now.
    # Once its handler task is done, it forgets the protocol (its keep-alive timer, its
    # server's connection list), as it would after the connection closed.
    handler: Any = request.protocol
    handler.transport = None
    request.task.add_done_callback(lambda _: handler.connection_lost(None))
    return response, connection
