"""Benchmark: 1, 2 and 4 workers draining the same queued events on one Redis.

    .venv/bin/python -m bench.worker_scaling [--events 50000] [--topics 1000] [--runs 3]

Fills the ingest streams (--partitions, 8 by default so 4 workers hold 2 each), then
starts N worker processes (`run_worker(settings, burst=True)`, as `realtime process
--burst`), each announced in the membership before it starts so each takes its fair
share at once (no worker grabs every partition because it came first), and times them
from a common start to the last one's end. Reports, per N, medians of --runs
(interleaved: 1, 2, 4, 1, 2, 4, ...): events/s, events per second of worker CPU (all
workers' CPU added), and events per second of Redis CPU (read from /proc), each also as
a ratio to the 1-worker run of the same invocation.

On a 2-core machine (pin Redis to one core with --redis-cpu, the workers to the other
with --worker-cpus): 2 and 4 workers share one core, so the aggregate rate cannot grow
past one worker core; what the run does show is Redis CPU per event as workers are
added (the number that says how many worker cores one Redis core feeds) and what the
sharing costs each worker per event. With more cores give each worker its own
(`--worker-cpus 2,3,4,5`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.worker import (
    added,
    events,
    fill,
    pass_through_file,
    redis_version,
    spread,
    worker_env,
)
from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.dev.embedded import RedisServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One worker process: a fixed owner token (announced in advance by the bench), then wait
# for the start signal (after counting itself ready), drain, and print (end time, CPU seconds used).
_WORKER = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
import uvloop
from processors.worker import consumer
from processors.worker.process import run_worker
from realtime.core.connections import connect
from realtime.core.settings import Settings
consumer.owner_token = lambda name: sys.argv[2]
settings = Settings.from_env()

async def main():
    redis = connect(settings, retries=0)
    await redis.incr(settings.prefix + "bench:ready")
    while not await redis.exists(settings.prefix + "bench:go"):
        await asyncio.sleep(0.001)
    await redis.aclose()
    cpu = time.process_time()
    await run_worker(settings, burst=True)
    print(time.time(), time.process_time() - cpu)

uvloop.run(main())
"""
COUNTS = (1, 2, 4)


@dataclass
class Run:
    elapsed_s: float
    worker_cpu_s: float  # all workers added
    redis_cpu_s: float


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    server: RedisServer, items: list[dict[str, Any]], workers: int, args: argparse.Namespace
) -> Run:
    assert server.process is not None
    settings = Settings(
        redis_url=server.url,
        prefix=f"bench{uuid.uuid4().hex[:8]}:",
        partitions=args.partitions,
        batch_size=args.batch,
        block_ms=100,
        consumer="bench",
    )
    keys = Keys(settings.prefix)
    redis = connect(settings, retries=0)
    cpus = args.worker_cpus or [None]
    try:
        await redis.flushdb()
        await fill(redis, settings, items)
        owners = [f"bench{i}#{uuid.uuid4().hex[:8]}" for i in range(workers)]
        seconds, _ = await redis.time()
        await redis.zadd(keys.workers(), {o: seconds * 1000 + 600_000 for o in owners})
        env = worker_env(settings, REALTIME_PIPELINES=pass_through_file())
        processes = []
        for i, owner in enumerate(owners):
            cpu = cpus[i % len(cpus)]
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    _WORKER,
                    REPO,
                    owner,
                    env={**env, "REALTIME_CONSUMER": f"bench{i}"},
                    cwd=REPO,
                    stdout=asyncio.subprocess.PIPE,
                    preexec_fn=None
                    if cpu is None
                    else functools.partial(os.sched_setaffinity, 0, {cpu}),
                )
            )
        while True:  # until each has imported and waits for the signal
            if int(await redis.get(settings.prefix + "bench:ready") or 0) >= workers:
                break
            await asyncio.sleep(0.01)
        redis_started = proc_cpu_s(server.process.pid)
        started = time.time()
        await redis.set(settings.prefix + "bench:go", 1)
        ends, used = [], 0.0
        for process in processes:
            out, _ = await process.communicate()
            if process.returncode:
                raise RuntimeError(f"a worker exited with {process.returncode}")
            end, cpu_s = out.split()[-2:]
            ends.append(float(end))
            used += float(cpu_s)
        run = Run(max(ends) - started, used, proc_cpu_s(server.process.pid) - redis_started)
        written = sum([await added(redis, keys.topic(t)) for t in {e["topic"] for e in items}])
        pending = sum(
            [
                (await redis.xpending(keys.ingest(p), settings.group))["pending"]
                for p in range(settings.partitions)
            ]
        )
        if pending or written != len(items):
            raise RuntimeError(f"incomplete: {written} of {len(items)} written, {pending} pending")
        return run
    finally:
        await redis.aclose()


def report(runs: dict[int, list[Run]], count: int) -> str:
    header = (
        *("workers", "events/s", "vs 1", "ev/s per worker core", "vs 1"),
        *("ev/s per Redis core", "vs 1", "Redis us/ev", "events/s min-max"),
    )
    lines = ["{:<8}{:>10}{:>7}{:>30}{:>7}{:>30}{:>7}{:>12}{:>20}".format(*header)]
    base = runs[COUNTS[0]]
    rate0 = statistics.median(count / r.elapsed_s for r in base)
    worker0 = statistics.median(count / r.worker_cpu_s for r in base)
    redis0 = statistics.median(count / r.redis_cpu_s for r in base)
    for workers, case in runs.items():
        rates = [count / r.elapsed_s for r in case]
        per_worker = [count / r.worker_cpu_s for r in case]
        per_redis = [count / r.redis_cpu_s for r in case]
        rate = statistics.median(rates)
        lines.append(
            f"{workers:<8}{rate:>10,.0f}{rate / rate0:>6.2f}x"
            f"{spread(per_worker):>30}{statistics.median(per_worker) / worker0:>6.2f}x"
            f"{spread(per_redis):>30}{statistics.median(per_redis) / redis0:>6.2f}x"
            f"{1e6 / statistics.median(per_redis):>12.2f}"
            f"{min(rates):>10,.0f}-{max(rates):,.0f}"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    server = RedisServer(directory=tempfile.mkdtemp(prefix="bench-scaling-")).start()
    try:
        if args.redis_cpu is not None and server.process is not None:
            os.sched_setaffinity(server.process.pid, {args.redis_cpu})
        items = events(args.topics, args.events)
        runs: dict[int, list[Run]] = {n: [] for n in COUNTS}
        for n in range(args.runs):
            for workers in COUNTS:
                runs[workers].append(await measure(server, items, workers, args))
            print(f"run {n + 1}/{args.runs} done", flush=True)
        print(
            f"\nworkers on one Redis, {args.events} events, {args.topics} topics over "
            f"{args.partitions} partitions, pass-through, Redis {redis_version(server)}, "
            f"median of {args.runs} (workers on CPUs {args.worker_cpus}, Redis on "
            f"{args.redis_cpu}; {os.cpu_count()} CPUs)"
        )
        print(report(runs, args.events))
    finally:
        server.cleanup()


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256, help="REALTIME_BATCH_SIZE")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--worker-cpus",
        type=lambda text: [int(c) for c in text.split(",")],
        help="CPUs for the workers, comma-separated, used in turn (default: unpinned)",
    )
    parser.add_argument("--redis-cpu", type=int, help="pin Redis to a CPU")
    args = parser.parse_args()
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
