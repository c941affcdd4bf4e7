"""A transport that reads with the kernel's receive timestamps (Linux `SO_TIMESTAMPNS`).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

SO_TIMESTAMPNS = 35  # Linux (asm-generic); also the control message's type
_TIMESPEC = struct.Struct("@qq")
READ_SIZE = 65536
ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)


def supported() -> bool:
    """Whether this platform gives receive timestamps on TCP sockets."""
    with socket.socket() as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            return False
    return True


class StampedTransport:
    """A connected socket driving `protocol`: `data_received_at(data, ms)` with the
    arrival time of the read's newest bytes (wall clock, ms), `connection_lost`."""

    def __init__(self, sock: socket.socket, protocol: Any) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()  # what the socket did not take yet
        self._closing = False
        self._closed = False
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(READ_SIZE, ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        if not data:
            self._lose(None)
            return
        at_ms = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                at_ms = seconds * 1000.0 + nanoseconds / 1e6
        self._protocol.data_received_at(data, time.time() * 1000.0 if at_ms is None else at_ms)

    # -- the asyncio.Transport surface wsclient uses --------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if not self._out:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lose(exc)
                return
            if sent == len(data):
                return
            data = data[sent:]
            self._loop.add_writer(self._fd, self._on_writable)
        self._out += data

    def _on_writable(self) -> None:
        try:
            sent = self._sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        del self._out[:sent]
        if not self._out:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._lose(None)

    def is_closing(self) -> bool:
        return self._closing or self._closed

    def close(self) -> None:
        """Close once what is written has been sent."""
        self._closing = True
        if not self._out:
            self._lose(None)

    def abort(self) -> None:
        self._lose(None)

    def _lose(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._out:
            self._loop.remove_writer(self._fd)
        self._sock.close()
        self._protocol.connection_lost(exc)


async def open_connection(host: str, port: int, protocol: Any) -> StampedTransport:
    """Connect a non-blocking socket and start `protocol` on it (`connection_made`)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, address)
        transport = StampedTransport(sock, protocol)
    except BaseException:
        sock.close()
        raise
    protocol.connection_made(transport)
    return transport
