"""SSE delivery next to websocket delivery, in one run: the same web process, the same
worker, the same events; N Server-Sent Events readers (`GET /api/v1/stream`) against N
Socket.IO websocket subscribers, one kind at a time, each on a topic of its own.

    python -m bench.sse [--events 10000] [--readers 10] [--runs 3]

One Redis, one web (`realtime serve`, pinned to --web-cpu) and one worker (`realtime
process`, --worker-cpu) for the whole run. Each phase opens `--readers` clients of one
kind on a fresh topic, posts `--events` events through the HTTP ingest API (batches of
1,000), and waits until every client has counted every event. After an uncounted
warm-up of each kind, the kinds alternate order from run to run. Per phase: deliveries
per second (readers x events / time from the first post to the last delivery) and the
web process's CPU per delivery (ingest included, the same in both kinds); medians with
min-max over --runs, and SSE / websocket ratios. The clients live in this process (the
SSE readers count events without decoding them); on a small machine they share its
cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import procstat
from bench.servers import OURS, Proc, start_server, start_worker
from bench.slowclient import receive
from realtime.core import jsoncodec
from realtime.dev.embedded import RedisServer, free_port

KINDS = ("websocket", "sse")
BATCH = 1000
TIMEOUT_S = 300


@dataclass
class Phase:
    deliveries_per_s: float
    web_us_per_delivery: float


async def websocket_reader(
    http: aiohttp.ClientSession, base: str, topic: str
) -> Callable[[int], Awaitable[None]]:
    """A Socket.IO subscriber over a raw websocket; returns `until(count)`."""
    ws = await http.ws_connect(f"{base}/socket.io/?EIO=4&transport=websocket".replace("http", "ws"))
    await ws.receive_str()  # the Engine.IO open packet
    await ws.send_str("40")
    await ws.receive_str()  # CONNECT answered
    await ws.send_str('421["subscribe",{"topic":"' + topic + '"}]')
    while not (await ws.receive_str()).startswith("431"):
        pass  # the ack

    async def until(count: int) -> None:
        await receive(ws, count)
        await ws.close()

    return until


async def sse_reader(
    http: aiohttp.ClientSession, base: str, topic: str
) -> Callable[[int], Awaitable[None]]:
    """A Server-Sent Events reader; returns `until(count)`."""
    response = await http.get(f"{base}/api/v1/stream?topic={topic}")
    assert response.status == 200, await response.text()
    while (await response.content.readline()).strip():
        pass  # the start position: the stream is joined

    async def until(count: int) -> None:
        got = 0
        while got < count:
            line = await response.content.readline()
            if not line:
                raise RuntimeError("the stream ended")
            if line.startswith(b"event: update"):
                got += 1
        response.close()

    return until


READERS = {"websocket": websocket_reader, "sse": sse_reader}


async def post_all(http: aiohttp.ClientSession, base: str, topic: str, events: int) -> None:
    for start in range(0, events, BATCH):
        batch = [
            {"topic": topic, "data": {"seq": n}} for n in range(start, min(start + BATCH, events))
        ]
        async with http.post(
            f"{base}/api/v1/events", data=jsoncodec.dumpb(batch),
            headers={"Content-Type": "application/json"},
        ) as response:  # fmt: skip
            assert response.status == 202, await response.text()


async def phase(web: Proc, base: str, kind: str, topic: str, readers: int, events: int) -> Phase:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        clients = [await READERS[kind](http, base, topic) for _ in range(readers)]
        cpu_before = procstat.cpu_seconds(web.pid)
        started = time.perf_counter()
        reading = asyncio.gather(*(until(events) for until in clients))
        await post_all(http, base, topic, events)
        await asyncio.wait_for(reading, TIMEOUT_S)
        elapsed = time.perf_counter() - started
        cpu = procstat.cpu_seconds(web.pid) - cpu_before
    deliveries = readers * events
    return Phase(deliveries / elapsed, cpu / deliveries * 1e6)


def summary(values: list[float], digits: int = 1) -> str:
    median, low, high = statistics.median(values), min(values), max(values)
    return f"{median:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})"


async def main(args: argparse.Namespace) -> None:
    redis = RedisServer(directory=Path(tempfile.mkdtemp(prefix="realtime-bench-sse-redis-")))
    redis.start()
    log_dir = Path(tempfile.mkdtemp(prefix="realtime-bench-sse-"))
    port = free_port()
    procs: list[Proc] = []
    results: dict[str, list[Phase]] = {kind: [] for kind in KINDS}
    try:
        web = await start_server(OURS, port, redis.url, {args.web_cpu}, log_dir, "web")
        procs.append(web)
        procs.append(await start_worker(redis.url, {args.worker_cpu}, log_dir))
        base = f"http://127.0.0.1:{port}"
        for kind in KINDS:  # warm-up, not counted: first connections, first topics
            await phase(web, base, kind, f"bench.sse.{kind}.warm", 2, min(1000, args.events))
        for run in range(args.runs):
            for kind in KINDS if run % 2 == 0 else KINDS[::-1]:
                topic = f"bench.sse.{kind}.{run}"
                result = await phase(web, base, kind, topic, args.readers, args.events)
                results[kind].append(result)
                line = f"{result.deliveries_per_s:,.0f} deliveries/s"
                line += f", {result.web_us_per_delivery:.1f} us web CPU each"
                print(f"[run {run + 1}] {kind}: {line}", file=sys.stderr)
    finally:
        for proc in procs:
            await proc.stop()
        redis.cleanup()
    print(f"{args.readers} readers x {args.events:,} events, one web, one worker; "
          f"median (min-max) of {args.runs}")  # fmt: skip
    print(f"{'kind':10s} {'deliveries/s':>30s} {'web us/delivery':>24s}")
    for kind in KINDS:
        rates = [r.deliveries_per_s for r in results[kind]]
        cpu = [r.web_us_per_delivery for r in results[kind]]
        print(f"{kind:10s} {summary(rates, 0):>30s} {summary(cpu):>24s}")
    ratio_rate = [
        s.deliveries_per_s / w.deliveries_per_s
        for s, w in zip(results["sse"], results["websocket"], strict=True)
    ]
    ratio_cpu = [
        s.web_us_per_delivery / w.web_us_per_delivery
        for s, w in zip(results["sse"], results["websocket"], strict=True)
    ]
    print(f"sse / websocket, per run: throughput {summary(ratio_rate, 2)}x, "
          f"web CPU per delivery {summary(ratio_cpu, 2)}x")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.sse", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--web-cpu", type=int, default=0)
    parser.add_argument("--worker-cpu", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
