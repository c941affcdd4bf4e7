"""Benchmark: HTTP ingest (`POST /api/v1/events`) against the physical limit, in one run.

    .venv/bin/python -m bench.ingest [--runs 3] [--duration 3] [--batches 1,100,1000]

Starts its own Redis and one `realtime serve`, pinned: the web alone on --server-cpu,
Redis and the load generator (this process) on --client-cpu. Then, interleaved per run:

- `raw XADD`: the reference, what Redis itself takes: the same entries (topic, ts,
  data) XADDed straight into the same Redis in pipelines of 1,000 with two in flight on
  each of two connections, from this process moved for the occasion to the server core
  (idle then), so the loader does not share Redis's core.
- `aiohttp floor x1`: the same one-event requests to a bare aiohttp handler that reads
  the body and answers 202 (`bench/ref/bare_aiohttp.py`): what one HTTP request costs
  on this server stack before any of ingest's work.
- `ingest xN`: HTTP POSTs of N events each (N=1: one event per request) from
  `bench/blaster.py`: pre-encoded keep-alive requests, one in flight per connection,
  so the generator costs a few us per request and is not the limit (its own CPU is
  printed as `loader`).

With `--baseline DIR` (a checkout of another version, e.g. `git archive main | tar -x -C
DIR`), a second web runs that version's code on the same core, and each `ingest xN` row
gets a `before xN` row measured in the same run, so the change is a ratio too.

Prints, per row: events/s; web CPU (fraction of its core) and events/s per web core
(events / web CPU seconds, the figure that does not depend on how busy the machine
is); Redis CPU per event; requests/s; and the ratio to `raw XADD` measured in the same
run. Medians of --runs with min-max. Every row checks that Redis holds exactly the
events that were answered 202.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench import procstat
from bench.blaster import Tally, blast_http, blast_xadd, http_request, resp_command
from bench.servers import PREFIX, REPO, BenchError, Proc, ours_env, wait_ready
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.topics import partition_of
from realtime.dev.embedded import RedisServer, free_port

TOPICS = [f"bench.t{n:04d}" for n in range(1000)]
PARTITIONS = 4
RAW = "raw XADD"
FLOOR = "aiohttp floor"


def event(n: int) -> dict[str, object]:
    return {"topic": TOPICS[n % len(TOPICS)], "data": {"value": round(n * 0.37, 2), "unit": "ms"}}


def bodies(batch: int, count: int = 16) -> list[bytes]:
    """`count` different request bodies of `batch` events (one event: the object alone)."""
    out = []
    for b in range(count):
        items = [event(b * batch + i) for i in range(batch)]
        out.append(jsoncodec.dumpb(items[0] if batch == 1 else items))
    return out


def xadds(count: int = 1000) -> list[bytes]:
    """What ingest writes for `count` events, as raw XADD commands."""
    keys = Keys(PREFIX)
    ts = str(int(time.time() * 1000)).encode()
    out = []
    for n in range(count):
        e = event(n)
        stream = keys.ingest(partition_of(str(e["topic"]), PARTITIONS)).encode()
        data = jsoncodec.dumpb(e["data"])
        topic = str(e["topic"]).encode()
        out.append(resp_command(b"XADD", stream, b"*", b"topic", topic, b"ts", ts, b"data", data))
    return out


@dataclass
class Row:
    events_s: float
    requests_s: float
    web_cpu: float  # fraction of one core
    redis_us: float  # Redis CPU per event
    loader_cpu: float  # fraction of one core

    @property
    def per_web_core(self) -> float:
        return self.events_s / self.web_cpu if self.web_cpu else 0.0


async def redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def stored(redis: Redis) -> int:
    keys = Keys(PREFIX)
    return sum([await redis.xlen(keys.ingest(p)) for p in range(PARTITIONS)])


async def measure(
    name: str,
    batch: int,
    args: argparse.Namespace,
    redis: Redis,
    redis_port: int,
    web: Proc,
    web_port: int,
) -> Row:
    await redis.flushdb()
    web_started = web.cpu()
    redis_started = await redis_cpu(redis)
    loader_started = procstat.self_cpu_seconds()
    started = time.perf_counter()
    tally: Tally
    if name == RAW:
        os.sched_setaffinity(0, {args.server_cpu})  # the web is idle: Redis gets its core
        try:
            tally = await blast_xadd("127.0.0.1", redis_port, xadds(), duration_s=args.duration)
        finally:
            os.sched_setaffinity(0, {args.client_cpu})
        requests = events = tally.answered
    else:
        requests_ = [
            http_request("127.0.0.1", web_port, "/api/v1/events", body) for body in bodies(batch)
        ]
        tally = await blast_http(
            "127.0.0.1",
            web_port,
            requests_,
            connections=args.connections,
            duration_s=args.duration,
        )
        if set(tally.statuses) != {202}:
            raise BenchError(f"{name} answered {tally.statuses}: {tally.sample[:300]!r}")
        requests, events = tally.answered, tally.answered * batch
        held = await stored(redis) if not name.startswith(FLOOR) else tally.accepted_total * batch
        if held != tally.accepted_total * batch:
            raise BenchError(
                f"ingest x{batch}: 202 for {tally.accepted_total * batch}, {held} held"
            )
    wall = time.perf_counter() - started
    web_cpu = (web.cpu() - web_started) / wall if name != RAW else 0.0
    return Row(
        events / tally.elapsed_s,
        requests / tally.elapsed_s,
        web_cpu,
        (await redis_cpu(redis) - redis_started) / max(events, 1) * 1e6 * (wall / tally.elapsed_s),
        (procstat.self_cpu_seconds() - loader_started) / wall,
    )


def spread(values: list[float], fmt: str) -> str:
    """Median (min-max)."""
    low, mid, high = (format(v, fmt) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low}-{high})"


def report(rows: dict[str, list[Row]]) -> str:
    raw = rows[RAW]
    lines = [
        f"{'row':<16}{'events/s':>30}{'vs raw XADD':>14}{'web core':>9}"
        f"{'events/s per web core':>34}{'requests/s':>28}{'Redis us/ev':>12}{'loader':>8}"
    ]
    for name, runs in rows.items():
        ratios = [r.events_s / x.events_s for r, x in zip(runs, raw, strict=True)]
        per_core = [r.per_web_core for r in runs]
        lines.append(
            f"{name:<16}{spread([r.events_s for r in runs], ',.0f'):>30}"
            f"{statistics.median(ratios):>13.3f}x"
            f"{statistics.median([r.web_cpu for r in runs]):>9.2f}"
            f"{spread(per_core, ',.0f') if name != RAW else '-':>34}"
            f"{spread([r.requests_s for r in runs], ',.0f') if name != RAW else '-':>28}"
            f"{statistics.median([r.redis_us for r in runs]):>12.2f}"
            f"{statistics.median([r.loader_cpu for r in runs]):>8.2f}"
        )
    floor = rows.get(f"{FLOOR} x1")
    if floor is not None and "ingest x1" in rows:
        ratios = [
            a.per_web_core / b.per_web_core for a, b in zip(rows["ingest x1"], floor, strict=True)
        ]
        lines.append(
            f"ingest x1 against {FLOOR} x1: {spread(ratios, '.2f')}x the requests per web core"
        )
    for name, runs in rows.items():
        if name.startswith("before"):
            after = rows[name.replace("before", "ingest")]
            per_core = [a.per_web_core / b.per_web_core for a, b in zip(after, runs, strict=True)]
            lines.append(
                f"{name.replace('before', 'ingest')} against {name}: "
                f"{spread(per_core, '.2f')}x the events per web core"
            )
    return "\n".join(lines)


async def start_web(
    name: str, code: str | None, port: int, cpu: int, log_dir: Path, env: dict[str, str]
) -> Proc:
    """`realtime serve`, of this checkout or (`code`) of the one in that folder."""
    if code is None:
        cmd = [sys.executable, "-m", "realtime"]
    else:
        run = "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
        run += "runpy.run_module('realtime', run_name='__main__', alter_sys=True)"
        cmd = [sys.executable, "-c", run, code]
    cmd += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    web = await Proc(f"web-{name}", cmd, {cpu}, log_dir, env).start()
    await wait_ready(web, f"http://127.0.0.1:{port}/readyz")
    return web


async def main(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {args.client_cpu})
    log_dir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    server = RedisServer(directory=log_dir / "redis").start()
    webs: dict[str, tuple[Proc, int]] = {}
    try:
        if server.process is not None:
            os.sched_setaffinity(server.process.pid, {args.client_cpu})
        env = ours_env(server.url) | {"REALTIME_PARTITIONS": str(PARTITIONS)}
        env |= dict(setting.split("=", 1) for setting in args.ours_env)
        for kind, code in [("ingest", None), ("before", args.baseline)]:
            if kind == "before" and code is None:
                continue
            port = free_port()
            webs[kind] = (await start_web(kind, code, port, args.server_cpu, log_dir, env), port)
        port = free_port()
        floor = [sys.executable, str(REPO / "bench" / "ref" / "bare_aiohttp.py"), str(port)]
        webs[FLOOR] = (await Proc("aiohttp", floor, {args.server_cpu}, log_dir).start(), port)
        await wait_ready(webs[FLOOR][0], f"http://127.0.0.1:{port}/readyz")
        redis = Redis.from_url(server.url)
        names = [RAW, f"{FLOOR} x1"]
        names += [f"{kind} x{b}" for b in args.batches for kind in webs if kind != FLOOR]
        rows: dict[str, list[Row]] = {name: [] for name in names}
        for n in range(args.runs):
            for name in names:
                kind, _, size = name.partition(" x")
                web, port = webs.get(kind, webs["ingest"])
                batch = int(size) if size else 0
                rows[name].append(await measure(name, batch, args, redis, server.port, web, port))
            print(f"run {n + 1}/{args.runs} done", flush=True)
        await redis.aclose()
        print(
            f"\nHTTP ingest, one web (CPU {args.server_cpu}) against raw XADD into the same Redis "
            f"(CPU {args.client_cpu}); {args.connections} connections, one request in flight "
            f"each; {args.duration:g} s per row; median (min-max) of {args.runs} runs"
        )
        print(report(rows))
    finally:
        for web, _ in webs.values():
            await web.stop()
        server.cleanup()


def _batches(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per row")
    parser.add_argument("--batches", type=_batches, default=[1, 100, 1000])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--ours-env", metavar="REALTIME_X=V", action="append", default=[], help="web setting"
    )
    run_cli(parser, main)


def run_cli(
    parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]]
) -> None:
    """Parse the arguments (`--baseline` made absolute: the webs run elsewhere) and run
    `main` on uvloop, pinned as the arguments say."""
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--baseline", metavar="DIR", help="also measure the code in DIR")
    args = parser.parse_args()
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
    import uvloop

    uvloop.run(main(args))


if __name__ == "__main__":
    cli()
