"""The outbox's fast path (`Outbox.lane`, realtime/outbox.py): the transport is handed
out for a direct write only while nothing waits before the frame, the connection is
under its bound and neither side has begun to close, and it follows each change of
those, over a real loopback connection whose peer reads when the test says so."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from realtime.transport.connection import WebSocketConnection
from realtime.transport.frames import Frame
from realtime.transport.outbox import Outbox

pytestmark = pytest.mark.integration

BOUND = 64 * 1024


class Receiver:
    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def on_message(self, data: str | bytes) -> None:
        pass

    def on_close(self, connection: WebSocketConnection) -> None:
        self.closed.set()


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[Outbox, WebSocketConnection, socket.socket]]:
    """An outbox on one end of a loopback TCP connection; the other end, a plain socket
    with small buffers that nobody reads until the test does."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.socket()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    await loop.sock_connect(ours, listener.getsockname())
    peer, _ = listener.accept()
    listener.close()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.setblocking(False)
    receiver = Receiver()
    transport, connection = await loop.create_connection(
        lambda: WebSocketConnection(None, receiver, 1 << 20),  # type: ignore[arg-type]
        sock=ours,
    )
    connection.transport = transport
    outbox = Outbox(connection, transport, connection, max_bytes=BOUND, max_packets=10_000)
    try:
        yield outbox, connection, peer
    finally:
        transport.abort()
        peer.close()
        await asyncio.wait_for(receiver.closed.wait(), 5)


def drain(peer: socket.socket) -> int:
    read = 0
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return read
        if not chunk:
            return read
        read += len(chunk)


async def test_the_lane_closes_at_the_bound_and_opens_once_drained() -> None:
    frame = Frame(b"4" + b"x" * 1000)
    async with connected() as (outbox, connection, peer):
        transport = outbox.transport
        assert outbox.lane is transport
        # The bound is the transport's high-water mark: crossing it pauses the protocol.
        assert transport.get_write_buffer_limits()[1] == BOUND - 1
        written = 0
        for _ in range(10_000):  # the kernel's buffers first, then the transport's
            lane = outbox.lane
            if lane is None:
                break
            assert transport.get_write_buffer_size() < BOUND
            lane.write(frame.websocket)
            written += len(frame.websocket)
        assert outbox.lane is None
        assert connection.writing_paused
        assert transport.get_write_buffer_size() >= BOUND
        # Meanwhile frames queue behind what the transport holds, in order.
        outbox.write(frame)
        outbox.write(frame)
        assert outbox.lane is None
        assert outbox.pending is not None
        assert len(outbox.pending) == 2
        written += 2 * len(frame.websocket)
        # The peer reads: the transport drains, the flusher writes what waited, and the
        # lane opens again once nothing is left.
        read = 0
        for _ in range(500):
            read += drain(peer)
            if outbox.lane is not None and read == written:
                break
            await asyncio.sleep(0.01)
        assert read == written
        assert outbox.lane is transport
        assert not outbox.pending
        assert not connection.writing_paused


async def test_the_lane_closes_with_the_connection() -> None:
    async with connected() as (outbox, connection, peer):
        assert outbox.lane is outbox.transport
        connection.shut(1000)  # our close frame is out: no update may follow it
        assert outbox.lane is None
        outbox._relane()
        assert outbox.lane is None
    async with connected() as (outbox, connection, peer):
        outbox.end()
        assert outbox.lane is None
    async with connected() as (outbox, connection, peer):
        peer.close()  # the client goes away
        for _ in range(200):
            if outbox.transport.is_closing():
                break
            outbox.write(Frame(b"4" + b"y" * 100))  # notices the reset
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert outbox.lane is None
