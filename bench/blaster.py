"""Load generators that are not the limit: pre-encoded requests on raw asyncio protocols.

- `blast_http`: HTTP/1.1 keep-alive POSTs, `connections` sockets each with `depth`
  requests in flight (depth 1: one at a time, as an ordinary client sends), bodies
  encoded once before the clock starts, responses parsed only as far as the status line
  and Content-Length. About 2-3 us of client CPU per request, so one core drives well
  over 100,000 requests/s.
- `blast_xadd`: the physical limit of ingest: pipelined `XADD`s of the same entries
  straight into Redis in RESP, several pipelines in flight, replies only counted.

Both run for `duration_s` and report what was answered in that time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Tally:
    answered: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    sample: bytes = b""  # the first response that was not a 202, if any
    accepted_total: int = 0  # 202s over the whole blast, warm-up and tail included


def http_request(host: str, port: int, path: str, body: bytes, headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode("ascii") + body


class _HttpConn(asyncio.Protocol):
    def __init__(self, requests: Sequence[bytes], depth: int, tally: Tally) -> None:
        self.requests = requests
        self.depth = depth
        self.tally = tally
        self.next = 0
        self.buffer = b""
        self.in_flight = 0
        self.sending = True
        self.transport: asyncio.Transport | None = None
        self.idle = asyncio.get_running_loop().create_future()

    @property
    def outstanding(self) -> int:
        return self.in_flight

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send(self.depth)

    def _send(self, count: int) -> None:
        assert self.transport is not None
        chunks = []
        for _ in range(count):
            chunks.append(self.requests[self.next])
            self.next = (self.next + 1) % len(self.requests)
        self.in_flight += count
        self.transport.write(b"".join(chunks))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        pos = 0
        done = 0
        tally = self.tally
        while True:
            end = buffer.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            head = buffer[pos:end]
            at = head.find(b"Content-Length: ")
            length = int(head[at + 16 : head.index(b"\r\n", at)]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            status = int(head[9:12])
            tally.statuses[status] += 1
            if status != 202 and not tally.sample:
                tally.sample = buffer[pos : end + 4 + length]
            pos = end + 4 + length
            done += 1
        self.buffer = buffer[pos:]
        self.in_flight -= done
        tally.answered += done
        if self.sending and done:
            self._send(done)
        elif not self.in_flight and not self.idle.done():
            self.idle.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.idle.done():
            self.idle.set_result(None)


async def blast_http(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int = 8,
    depth: int = 1,
    duration_s: float = 3.0,
    warmup_s: float = 0.5,
) -> Tally:
    """Counts the responses answered between `warmup_s` and `warmup_s + duration_s`."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    conns: list[_HttpConn] = []
    for n in range(connections):
        # Each connection starts at another body, so the mix is the same on all of them.
        rotated = list(requests[n % len(requests) :]) + list(requests[: n % len(requests)])
        _, conn = await loop.create_connection(
            lambda r=rotated: _HttpConn(r, depth, tally),  # type: ignore[misc]
            host,
            port,
        )
        conns.append(conn)
    return await _measure(tally, conns, warmup_s, duration_s)


def resp_command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _RespConn(asyncio.Protocol):
    """Keeps `in_flight` pipelines of `commands` going; each reply a bulk string id."""

    def __init__(self, pipeline: bytes, size: int, in_flight: int, tally: Tally) -> None:
        self.pipeline = pipeline
        self.size = size
        self.in_flight = in_flight
        self.tally = tally
        self.pending = 0  # replies still due (CRLF pairs counted)
        self.crlfs = 0
        self.sending = True
        self.tail = b""
        self.transport: asyncio.Transport | None = None
        self.idle = asyncio.get_running_loop().create_future()

    @property
    def outstanding(self) -> int:
        return self.pending

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for _ in range(self.in_flight):
            self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.pending += self.size
        self.transport.write(self.pipeline)

    def data_received(self, data: bytes) -> None:
        if data[:1] == b"-" or b"\r\n-" in data:
            raise RuntimeError(f"Redis refused an XADD: {data[:200]!r}")
        # Each reply is `$N\r\n<id>\r\n`: two CRLFs (a CRLF may straddle two reads).
        joined = self.tail + data
        self.crlfs += joined.count(b"\r\n") - self.tail.count(b"\r\n")
        self.tail = data[-1:]
        replies, self.crlfs = divmod(self.crlfs, 2)
        self.pending -= replies
        self.tally.answered += replies
        while self.sending and self.pending <= self.size * (self.in_flight - 1):
            self._send()
        if not self.sending and self.pending == 0 and not self.idle.done():
            self.idle.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.idle.done():
            self.idle.set_result(None)


async def blast_xadd(
    host: str,
    port: int,
    commands: Sequence[bytes],
    *,
    connections: int = 2,
    in_flight: int = 2,
    duration_s: float = 3.0,
    warmup_s: float = 0.3,
) -> Tally:
    """`commands`: pre-encoded XADDs, sent as one pipeline again and again."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    pipeline = b"".join(commands)
    conns: list[_RespConn] = []
    for _ in range(connections):
        _, conn = await loop.create_connection(
            lambda: _RespConn(pipeline, len(commands), in_flight, tally), host, port
        )
        conns.append(conn)
    return await _measure(tally, conns, warmup_s, duration_s)


async def _measure(
    tally: Tally, conns: Sequence[_HttpConn | _RespConn], warmup_s: float, duration_s: float
) -> Tally:
    """What was answered in the window after the warm-up; then the connections stop
    sending, their answers still due are awaited, and they are closed."""
    await asyncio.sleep(warmup_s)
    start_count, started = tally.answered, time.perf_counter()
    start_statuses = Counter(tally.statuses)
    await asyncio.sleep(duration_s)
    end_count, ended = tally.answered, time.perf_counter()
    statuses = Counter(tally.statuses)
    for conn in conns:
        conn.sending = False
    await asyncio.wait_for(asyncio.gather(*[c.idle for c in conns if c.outstanding]), 30)
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    statuses.subtract(start_statuses)
    return Tally(
        end_count - start_count, +statuses, ended - started, tally.sample, tally.statuses[202]
    )
