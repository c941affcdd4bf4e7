"""Benchmark: history by time. Memory per retained event per tier, a 10,000-point range
read, and the backfill of a week at 1-minute resolution for 20 charts at once.

    .venv/bin/python -m bench.retention [--runs 3]

- memory: each tier filled with what its default retention holds (raw: 15 minutes at 10
  events/s; `1s`: an hour; `10s`: a day; `1m`: 30 days) in the shapes the worker writes
  (a raw `{"value"}`, a window's eleven aggregate fields), then `MEMORY USAGE`. The same
  bytes every run (it is not timed).
- range read: `GET /api/v1/topics/{topic}/events?from=` for 10,000 events, 10 pages of
  1,000 with the cursor, against `realtime serve`: wall time, the web's CPU, bytes. The
  reference in the same run: the same 10,000 entries read by redis-py with XRANGE (1,000
  a call) in this process: the floor of Redis plus decoding.
- backfill: one Socket.IO connection subscribes 20 charts
  `{topic: "metrics.chartNN", from: now - 7 d, resolution: "auto", points: 600}` (served
  `metrics.chartNN:1m`, 10,080 events each) at once and waits for every event; the
  reference in the same run is one chart alone, so "x one chart" is the cost of 20 against
  1 (20.0 would be no sharing at all).

Medians of --runs with min-max. Redis and the web process are started here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from redis.asyncio import Redis

from bench.servers import Proc, ours_env, wait_ready
from realtime.core import jsoncodec
from realtime.core.keys import HISTORY_DATA_FIELD, HISTORY_TS_FIELD, Keys
from realtime.dev.embedded import RedisServer, free_port

PREFIX = "bench:"
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
CHARTS = 20
RANGE_EVENTS = 10_000

# tier -> (window ms, events its default retention holds)
TIERS = {
    "raw": (100, 9_000),
    "1s": (1_000, 3_600),
    "10s": (10_000, 8_640),
    "1m": (60_000, 43_200),
}


def raw_data(n: int) -> dict[str, Any]:
    return {"value": round(50 + (n * 7919 % 1000) / 37, 3)}


def window_data(start: int, size: int, n: int) -> dict[str, Any]:
    value = raw_data(n)["value"]
    return {
        "window_start": start,
        "window_end": start + size,
        "count": 10 + n % 50,
        "sum": round(value * 31.7, 6),
        "min": round(value - 3.25, 3),
        "max": round(value + 4.5, 3),
        "avg": value,
        "last": round(value + 0.125, 3),
        "p50": value,
        "p95": round(value + 3.9, 3),
        "p99": round(value + 4.4, 3),
    }


async def fill(redis: Redis, topic: str, tier: str, count: int, end_ms: int) -> None:
    """`count` events of `tier`'s shape, the newest ending at `end_ms`, as the worker
    writes them (id = event time, or the window end)."""
    size = TIERS[tier][0]
    key = Keys(PREFIX).topic(topic)
    first = end_ms - count * size
    for chunk in range(0, count, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(chunk, min(chunk + 1000, count)):
                start = first + n * size
                data = raw_data(n) if tier == "raw" else window_data(start, size, n)
                fields = {HISTORY_TS_FIELD: str(start), HISTORY_DATA_FIELD: jsoncodec.dumps(data)}
                pipe.xadd(key, fields, id=f"{start + size}-0")  # type: ignore[arg-type]
            await pipe.execute()


async def memory(redis: Redis) -> list[str]:
    lines = [f"{'tier':<6}{'events':>8}{'bytes/event':>13}{'MiB/topic':>11}"]
    now = int(time.time() * 1000)
    for tier, (_, count) in TIERS.items():
        topic = f"mem.{tier}"
        await fill(redis, topic, tier, count, now)
        used = int(await redis.memory_usage(Keys(PREFIX).topic(topic), samples=0) or 0)
        lines.append(f"{tier:<6}{count:>8,}{used / count:>13.1f}{used / 2**20:>11.2f}")
    return lines


async def range_read(url: str, topic: str) -> tuple[int, int]:
    """Every page of the range read: (events, bytes)."""
    events = size = 0
    query = {"from": "0", "limit": "1000"}
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{url}/api/v1/topics/{topic}/events", params=query) as reply:
                body = await reply.read()
            page = jsoncodec.loads(body)
            events, size = events + len(page["events"]), size + len(body)
            if page["next"] is None:
                return events, size
            query["cursor"] = page["next"]


async def xrange_read(redis: Redis, topic: str) -> int:
    key, start, events = Keys(PREFIX).topic(topic), "-", 0
    while True:
        page: Any = await redis.xrange(key, min=start, count=1000)
        events += len(page)
        for _, fields in page:
            jsoncodec.loads(fields[HISTORY_DATA_FIELD.encode()])
        if len(page) < 1000:
            return events
        start = "(" + page[-1][0].decode()


async def backfill(url: str, charts: int) -> float:
    """Seconds until one connection has every event of `charts` week-long 1m charts."""
    client = socketio.AsyncClient()
    counts = dict.fromkeys((f"metrics.chart{n:02d}:1m" for n in range(charts)), 0)
    done = asyncio.Event()
    wanted = WEEK_MS // 60_000

    async def on_update(events: list[dict[str, Any]], *_: Any) -> None:
        for event in events:
            counts[event["topic"]] += 1
        if all(c >= wanted for c in counts.values()):
            done.set()

    client.on("update", on_update)
    await client.connect(url, transports=["websocket"])
    started = time.perf_counter()
    start = int(time.time() * 1000) - WEEK_MS
    acks = await asyncio.gather(
        *[
            client.call(
                "subscribe",
                {"topic": t[:-3], "from": start, "resolution": "auto", "points": 600},
            )
            for t in counts
        ]
    )
    if {a.get("topic") for a in acks} != set(counts):
        raise RuntimeError(f"unexpected acks: {acks[:2]}")
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - started
    await client.disconnect()
    return elapsed


def spread(values: list[float], unit: str = "", digits: int = 3) -> str:
    return (
        f"{statistics.median(values):.{digits}f}{unit} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


async def timed(runs: int, make: Callable[[], Awaitable[Any]]) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = await make()
        times.append(time.perf_counter() - started)
    return times, result


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    server = RedisServer(directory=folder / "redis").start()
    redis = Redis.from_url(server.url)
    port = free_port()
    env = {**ours_env(server.url), "REALTIME_SUBSCRIBE_RATE": "1000"}
    args_ = [sys.executable, "-m", "realtime", "serve", "--host", "127.0.0.1", "--port", str(port)]
    web = Proc("web", args_, set(os.sched_getaffinity(0)), folder, env)
    try:
        print("memory per retained event, default retention of each tier:")
        print("\n".join(await memory(redis)))

        await web.start()
        url = f"http://127.0.0.1:{port}"
        await wait_ready(web, url + "/readyz")
        await fill(redis, "range.raw", "raw", RANGE_EVENTS, int(time.time() * 1000))
        now = int(time.time() * 1000)
        for n in range(CHARTS):
            await fill(redis, f"metrics.chart{n:02d}:1m", "1m", WEEK_MS // 60_000, now)

        http_s, cpu_s, floor_s = [], [], []
        size = 0
        for _ in range(args.runs):
            cpu = web.cpu()
            times, (events, size) = await timed(1, lambda: range_read(url, "range.raw"))
            cpu_s.append(web.cpu() - cpu)
            http_s += times
            assert events == RANGE_EVENTS, events
            floor, _ = await timed(1, lambda: xrange_read(redis, "range.raw"))
            floor_s += floor
        ratio = statistics.median(http_s) / statistics.median(floor_s)
        print(f"\nrange read of {RANGE_EVENTS:,} events (10 pages), median of {args.runs}:")
        print(f"  HTTP, wall      {spread(http_s, ' s')}")
        print(f"  web CPU         {spread(cpu_s, ' s')}")
        print(f"  bytes           {size:,} ({size / RANGE_EVENTS:.0f} per event)")
        print(f"  XRANGE floor    {spread(floor_s, ' s')}   HTTP / floor {ratio:.1f}x")

        one, many = [], []
        for _ in range(args.runs):
            one.append(await backfill(url, 1))
            many.append(await backfill(url, CHARTS))
        print(f"\nbackfill of a week at 1m ({WEEK_MS // 60_000:,} events a chart), one connection:")
        print(f"  1 chart         {spread(one, ' s')}")
        print(f"  {CHARTS} charts       {spread(many, ' s')}")
        total = CHARTS * (WEEK_MS // 60_000)
        print(
            f"  {CHARTS} charts: {statistics.median(many) / statistics.median(one):.1f}x one "
            f"chart, {total / statistics.median(many):,.0f} events/s"
        )
    finally:
        await web.stop()
        await redis.aclose()
        server.cleanup()


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
