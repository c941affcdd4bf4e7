"""Connect storms (issue 22, target 6): connects/s with auth on against Node in one run,
and a 10,000-client reconnect storm on one instance.

    .venv/bin/python -m bench.storm --runs 3                 # both parts
    .venv/bin/python -m bench.storm --runs 3 --skip-storm    # connects/s only

- **Connects/s with auth.** Every client presents its own HS256 JWT (`auth: {token}`),
  subscribes with `snapshot: 10` and waits for the ack that carries the snapshot: ours
  (`realtime serve` with REALTIME_JWT_SECRET) against the Node reference
  (bench/ref/node/server.js with JWT_SECRET: jsonwebtoken in the handshake, a room join
  and an XREVRANGE of the same history stream). `--clients` clients per run, at most
  `--concurrency` in flight per load process; interleaved runs, a fresh server each.
  Prints connects/s and the server's CPU per connect (its reciprocal is connects/s per
  server core, which holds even when the load generator were the limit).
- **Reconnect storm** (ours): `--storm` subscribers on `--topics` topics while the
  worker delivers `--topic-rate` events/s per topic; every client is dropped at once
  (the load processes abort their sockets) and reconnects at a random moment within
  `--window` seconds, with its own token, subscribing with `since` = the last id it got.
  Each event carries a sequence number (per topic, in steps of the topic count), so the
  clients check that nothing is missing or repeated, from their first event to the last
  one published. Prints the time from the drop until every client got an event
  published after its reconnect (full recovery), and connect-to-first-update times.

`--baseline DIR`: our server of the checkout in DIR too (`before`), in the same runs,
interleaved, for both parts.

Server pinned to `--server-cpu`; Redis, the worker, the publisher and `--procs` load
processes (`python -m bench.stormload`) to `--client-cpu`; their CPU is printed so a
load generator at its limit shows. Each load process connects from its own source
address (127.0.0.2, ...) with a raised open-files limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from math import inf
from pathlib import Path
from typing import Any

from bench import procstat
from bench.servers import (
    NODE,
    OURS,
    PREFIX,
    Proc,
    Publisher,
    ours_env,
    start_server,
    start_worker,
    wait_ready,
)
from bench.stormload import NOFILE, SECRET, SNAPSHOT
from realtime.core import jsoncodec
from realtime.dev.embedded import RedisServer, free_port
from realtime.loadtest.stats import percentile

RATE_TOPICS = [f"rate.{n}" for n in range(10)]
HISTORY = 100  # entries in each rate topic's history
BEFORE = "before"  # our server, the code of `--baseline DIR`


# -- the bench ------------------------------------------------------------------------------


@dataclass
class Setup:
    redis: RedisServer
    server_cpus: set[int]
    client_cpus: set[int]
    log_dir: Path
    children: list[Proc]
    py_spy: Path | None = None  # where py-spy writes our server's stacks (rate runs)
    baseline: str | None = None  # a checkout of another version (`--baseline`)

    async def ask_all(self, name: str, jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(c.ask({name: job}) for c, job in zip(self.children, jobs, strict=True))
            )
        )

    def children_cpu(self) -> float:
        return sum(c.cpu() for c in self.children)


def server_env(kind: str) -> dict[str, str]:
    if kind == OURS:  # the storm holds 10,000 and more, the default limit
        return {"REALTIME_JWT_SECRET": SECRET, "REALTIME_MAX_CONNECTIONS": str(2 * NOFILE)}
    return {"JWT_SECRET": SECRET, "HISTORY_PREFIX": PREFIX}


async def start_before(setup: Setup, code: str, port: int, name: str) -> Proc:
    """`realtime serve` of the checkout in `code` (`--baseline`), as ours is started."""
    run = "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    run += "runpy.run_module('realtime', run_name='__main__', alter_sys=True)"
    cmd = [sys.executable, "-c", run, code, "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = ours_env(setup.redis.url)
    proc = await Proc(name, cmd, setup.server_cpus, setup.log_dir, env).start()
    await wait_ready(proc, f"http://127.0.0.1:{port}/readyz")
    return proc


@contextlib.asynccontextmanager
async def server(setup: Setup, kind: str, name: str) -> Any:
    # start_server reads the environment it inherits: the secret goes in for this start.
    saved = dict(os.environ)
    os.environ.update(server_env(OURS if kind == BEFORE else kind))
    try:
        port = free_port()
        if kind == BEFORE:
            assert setup.baseline is not None
            proc = await start_before(setup, setup.baseline, port, name)
        else:
            proc = await start_server(
                kind, port, setup.redis.url, setup.server_cpus, setup.log_dir, name
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        await proc.stop()


async def fill_history(redis_url: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for topic in RATE_TOPICS:
                key = f"{PREFIX}topic:{topic}"
                pipe.delete(key)
                for n in range(HISTORY):
                    data = {"value": 40 + n % 7, "host": f"web-{n % 5}", "seq": n}
                    pipe.xadd(
                        key, {"ts": str(1_700_000_000_000 + n), "data": jsoncodec.dumps(data)}
                    )
            await pipe.execute()
    finally:
        await redis.aclose()


async def profile(path: Path | None, proc: Proc) -> asyncio.subprocess.Process | None:
    """py-spy recording `proc` into `path` (raw stacks), if asked for."""
    if path is None:
        return None
    spy = await asyncio.create_subprocess_exec(
        shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
        # Not stopping the server for each sample: it would run at half speed.
        *("record", "--nonblocking", "--format", "raw", "--rate", "250", "--pid", str(proc.pid)),
        *("--output", str(path)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # attached
    return spy


async def stop_profile(spy: asyncio.subprocess.Process | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await spy.wait()


async def rate_once(setup: Setup, kind: str, clients: int, concurrency: int) -> dict[str, float]:
    async with server(setup, kind, f"{kind}-rate") as (proc, url):
        per = clients // len(setup.children)
        job = {"url": url, "topics": RATE_TOPICS, "count": per, "concurrency": concurrency}
        # A warm-up (imports, first allocations) before the measured storm.
        await setup.ask_all("rate", [{**job, "count": 50}] * len(setup.children))
        await asyncio.sleep(0.5)
        spy = await profile(setup.py_spy if kind == OURS else None, proc)
        user0, sys0 = procstat.cpu_split(proc.pid)
        load0, wall0 = setup.children_cpu(), time.monotonic()
        redis0 = procstat.cpu_seconds(setup.redis.process.pid)  # type: ignore[union-attr]
        answers = await setup.ask_all("rate", [job] * len(setup.children))
        wall = time.monotonic() - wall0
        user1, sys1 = procstat.cpu_split(proc.pid)
        cpu = user1 + sys1 - user0 - sys0
        load = setup.children_cpu() - load0
        redis = procstat.cpu_seconds(setup.redis.process.pid) - redis0  # type: ignore[union-attr]
        await stop_profile(spy)
    ok = sum(a["ok"] for a in answers)
    for a in answers:
        for reason, n in a["reasons"].items():
            print(f"  {kind}: {n} failed: {reason}", file=sys.stderr)
    span_s = (max(a["end"] for a in answers) - min(a["start"] for a in answers)) / 1000
    ms = sorted(x for a in answers for x in a["ms"])
    return {
        "connects_s": ok / span_s,
        "failures": sum(a["failures"] for a in answers),
        "server_us": cpu / ok * 1e6 if ok else float("nan"),
        "kernel_share": (sys1 - sys0) / cpu if cpu else float("nan"),
        "server_busy": cpu / wall,
        "loadgen_busy": load / wall,
        "redis_busy": redis / wall,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
    }


def _median(runs: list[dict[str, float]], key: str) -> tuple[float, float, float]:
    values = [r[key] for r in runs]
    return statistics.median(values), min(values), max(values)


def print_rate(results: dict[str, list[dict[str, float]]], clients: int) -> None:
    runs = len(next(iter(results.values())))
    print(
        f"\nconnects/s with auth (JWT HS256 verify, subscribe, {SNAPSHOT}-event snapshot); "
        f"{clients:,} clients per run, median of {runs} [min-max]"
    )
    head = f"{'server':<10} {'connects/s':>24} {'server us/connect':>22} {'per core':>9}"
    print(head + f" {'kernel':>7} {'p99 ms':>8} {'srv/load/redis busy':>20} {'fail':>5}")
    for kind, rs in results.items():
        rate, lo, hi = _median(rs, "connects_s")
        us, ulo, uhi = _median(rs, "server_us")
        busy = "/".join(
            f"{_median(rs, k)[0]:.0%}" for k in ("server_busy", "loadgen_busy", "redis_busy")
        )
        print(
            f"{kind:<10} {rate:>8,.0f} [{lo:,.0f}-{hi:,.0f}] {us:>9.0f} [{ulo:.0f}-{uhi:.0f}]"
            f" {1e6 / us:>9,.0f} {_median(rs, 'kernel_share')[0]:>7.0%}"
            f" {_median(rs, 'p99_ms')[0]:>8.1f} {busy:>20}"
            f" {sum(r['failures'] for r in rs):>5.0f}"
        )
    for kind in (NODE, BEFORE):
        if OURS in results and kind in results:
            _ratio(results, kind)


def _ratio(results: dict[str, list[dict[str, float]]], other: str) -> None:
    pairs = list(zip(results[OURS], results[other], strict=True))
    ratios = [o["connects_s"] / n["connects_s"] for o, n in pairs]
    core = [n["server_us"] / o["server_us"] for o, n in pairs]
    print(
        f"ours/{other} connects/s: {statistics.median(ratios):.2f}x "
        f"[{min(ratios):.2f}-{max(ratios):.2f}]; per server core (CPU per connect): "
        f"{statistics.median(core):.2f}x [{min(core):.2f}-{max(core):.2f}]"
    )


async def last_seqs(redis_url: str, topics: list[str]) -> dict[str, int]:
    """Each topic's last published sequence number, once the worker is done with them."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        seen: dict[str, int] = {}
        while True:
            now = {}
            for topic in topics:
                entries: Any = await redis.xrevrange(f"{PREFIX}topic:{topic}", count=1)
                now[topic] = jsoncodec.loads(entries[0][1][b"data"])["seq"] if entries else -1
            if now == seen:
                return now
            seen = now
            await asyncio.sleep(1.0)
    finally:
        await redis.aclose()


async def storm_once(setup: Setup, args: argparse.Namespace, kind: str = OURS) -> dict[str, float]:
    from redis.asyncio import Redis

    redis = Redis.from_url(setup.redis.url)
    await redis.flushall()
    await redis.aclose()
    topics = [f"storm.{n}" for n in range(args.topics)]
    per = args.storm // len(setup.children)
    worker = await start_worker(setup.redis.url, setup.client_cpus, setup.log_dir)
    publisher: Publisher | None = None
    publishing: asyncio.Task[dict[str, Any]] | None = None
    try:
        async with server(setup, kind, f"{kind}-storm") as (proc, url):
            publisher = await Publisher.start(
                OURS, "stream", setup.redis.url, url, setup.client_cpus, setup.log_dir
            )
            rate = args.topic_rate * len(topics)
            publishing = asyncio.create_task(publisher.publish(topics, rate, int(rate * 3600), 1))
            await asyncio.sleep(1.0)  # history has events before anyone subscribes
            t0 = time.monotonic()
            job = {"url": url, "topics": topics, "count": per, "concurrency": args.concurrency}
            await setup.ask_all("hold", [job] * len(setup.children))
            held_s = time.monotonic() - t0
            await asyncio.sleep(3.0)
            storm_spy = None
            if setup.py_spy is not None and kind == OURS:
                storm_spy = setup.py_spy.with_suffix(".storm.txt")
            spy = await profile(storm_spy, proc)
            cpu0, load0, wall0 = proc.cpu(), setup.children_cpu(), time.monotonic()
            drop = {"url": url, "window_s": args.window}
            dropped = min(
                a["dropped"] for a in await setup.ask_all("drop", [drop] * len(setup.children))
            )
            reports = await setup.ask_all("report", [{"wait_s": 120.0}] * len(setup.children))
            wall = time.monotonic() - wall0
            cpu, load = proc.cpu() - cpu0, setup.children_cpu() - load0
            await stop_profile(spy)
            await asyncio.sleep(2.0)  # events keep flowing after the storm
            publishing.cancel()
            await publisher.stop()
            publisher = None
            last = await last_seqs(setup.redis.url, topics)
            await asyncio.sleep(1.0)
            checks = await setup.ask_all("verify", [{"last": last}] * len(setup.children))
            await setup.ask_all("close", [{}] * len(setup.children))
    finally:
        if publishing is not None:
            publishing.cancel()
            with contextlib.suppress(BaseException):
                await publishing
        if publisher is not None:
            await publisher.stop()
        await worker.stop()

    def column(name: str) -> list[float | None]:
        return [x for r in reports for x in r[name]]

    starts, firsts, recovered = column("reconnect"), column("first_update"), column("recovered")
    acked = column("acked")
    to_first = sorted(
        f - s for s, f in zip(starts, firsts, strict=True) if s is not None and f is not None
    )
    to_ack = sorted(
        a - s for s, a in zip(starts, acked, strict=True) if s is not None and a is not None
    )
    done = [r for r in recovered if r is not None]
    return {
        "clients": float(per * len(setup.children)),
        "held_s": held_s,
        "recovered_clients": float(len(done)),
        # inf: some client had not recovered when the wait ended
        "full_recovery_s": (max(done) - dropped) / 1000 if len(done) == len(recovered) else inf,
        "last_reconnect_s": (max(s for s in starts if s is not None) - dropped) / 1000,
        "first_p50_ms": percentile(to_first, 50),
        "first_p99_ms": percentile(to_first, 99),
        "ack_p99_ms": percentile(to_ack, 99),
        "gaps": float(sum(c["gaps"] for c in checks)),
        "dups": float(sum(c["dups"] for c in checks)),
        "behind": float(sum(c["behind"] for c in checks)),
        "refused": float(sum(r["refused"] for r in reports)),
        "retries": float(sum(r["retries"] for r in reports)),
        "server_busy": cpu / wall,
        "loadgen_busy": load / wall,
        "server_cpu_s": cpu,
        "server_ms_per_reconnect": cpu / len(starts) * 1000,
    }


def _summed(runs: list[dict[str, float]], label: str) -> str:
    """The counts of every run together; the busy shares as medians."""
    if label.startswith("gaps"):
        return "/".join(f"{sum(r[k] for r in runs):.0f}" for k in ("gaps", "dups", "behind"))
    if label.startswith("acks"):
        return "/".join(f"{sum(r[k] for r in runs):.0f}" for k in ("refused", "retries"))
    return "/".join(f"{_median(runs, k)[0]:.0%}" for k in ("server_busy", "loadgen_busy"))


def print_storm(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    runs = len(next(iter(results.values())))
    print(
        f"\nreconnect storm: {args.storm:,} subscribers on {args.topics} topics, "
        f"{args.topic_rate:g} events/s per topic, all dropped, each reconnecting with "
        f"`since` within {args.window:g} s; median of {runs} [min-max]"
    )
    rows = [
        ("time to full recovery (s)", "full_recovery_s", "{:.2f}"),
        ("last reconnect began (s after drop)", "last_reconnect_s", "{:.2f}"),
        ("connect-to-first-update p50 (ms)", "first_p50_ms", "{:.0f}"),
        ("connect-to-first-update p99 (ms)", "first_p99_ms", "{:.0f}"),
        ("connect-to-ack p99 (ms)", "ack_p99_ms", "{:.0f}"),
        ("clients recovered", "recovered_clients", "{:,.0f}"),
        ("gaps / duplicates / behind at end, all runs", None, ""),
        ("acks recovered: false / retried connects, all runs", None, ""),
        ("server / load generator busy in the storm", None, ""),
        ("initial connect of all subscribers (s)", "held_s", "{:.1f}"),
        ("server CPU from drop to full recovery (s)", "server_cpu_s", "{:.1f}"),
        ("server CPU per reconnect (ms)", "server_ms_per_reconnect", "{:.2f}"),
    ]
    for kind, storms in results.items():
        if len(results) > 1:
            print(f" {kind}:")
        for label, key, fmt in rows:
            if key is None:
                print(f"  {label:<44} {_summed(storms, label)}")
                continue
            mid, lo, hi = _median(storms, key)
            print(f"  {label:<44} {fmt.format(mid)} [{fmt.format(lo)}-{fmt.format(hi)}]")
    if OURS in results and BEFORE in results:
        pairs = list(zip(results[OURS], results[BEFORE], strict=True))
        cpu = [b["server_ms_per_reconnect"] / o["server_ms_per_reconnect"] for o, b in pairs]
        print(
            f"before/ours server CPU per reconnect: {statistics.median(cpu):.2f}x "
            f"[{min(cpu):.2f}-{max(cpu):.2f}]"
        )


async def run(args: argparse.Namespace, log_dir: Path) -> None:
    os.sched_setaffinity(0, {args.client_cpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Children (servers included) inherit it: 10,000 sockets on one server.
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, NOFILE), hard), hard))
    redis = RedisServer(directory=log_dir / "redis").start()
    for tid in os.listdir(f"/proc/{redis.process.pid}/task"):  # type: ignore[union-attr]
        os.sched_setaffinity(int(tid), {args.client_cpu})
    children: list[Proc] = []
    try:
        for n in range(args.procs):
            cmd = [sys.executable, "-m", "bench.stormload", str(n), f"127.0.0.{n + 2}"]
            child = Proc(f"load-{n}", cmd, {args.client_cpu}, log_dir, stdin_pipe=True)
            children.append(await child.start())
        cpus = ({args.server_cpu}, {args.client_cpu})
        setup = Setup(redis, *cpus, log_dir, children, args.py_spy, args.baseline)
        most = max(args.clients, args.storm) // args.procs
        await setup.ask_all("tokens", [{"count": most}] * args.procs)
        if not args.skip_rate:
            await fill_history(redis.url)
            results: dict[str, list[dict[str, float]]] = {k: [] for k in args.servers}
            for n in range(args.runs):
                for kind in args.servers:
                    print(f"[run {n + 1}/{args.runs}] connects/s: {kind}", file=sys.stderr)
                    results[kind].append(
                        await rate_once(setup, kind, args.clients, args.concurrency)
                    )
            print_rate(results, args.clients)
        if not args.skip_storm:
            kinds = [OURS, BEFORE] if args.baseline else [OURS]
            storms: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
            for n in range(args.runs):
                for kind in kinds:
                    print(f"[run {n + 1}/{args.runs}] reconnect storm: {kind}", file=sys.stderr)
                    storms[kind].append(await storm_once(setup, args, kind))
            print_storm(storms, args)
    finally:
        for child in children:
            await child.end()
        redis.cleanup()
    print(
        f"\nserver on CPU {args.server_cpu}; Redis, worker, publisher and {args.procs} load "
        f"processes on CPU {args.client_cpu}; load average {os.getloadavg()[0]:.1f}; "
        f"logs in {log_dir}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4000, help="connects per rate run")
    parser.add_argument("--concurrency", type=int, default=100, help="per load process")
    parser.add_argument("--servers", default="ours,node")
    parser.add_argument("--storm", type=int, default=10_000)
    parser.add_argument("--topics", type=int, default=5)
    parser.add_argument("--topic-rate", type=float, default=2.0, help="events/s per topic")
    parser.add_argument("--window", type=float, default=5.0, help="reconnects spread over (s)")
    parser.add_argument("--procs", type=int, default=4, help="load generator processes")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--skip-storm", action="store_true")
    parser.add_argument("--log-dir", type=Path)
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run our server from the checkout in DIR (server kind `before`)",
    )
    parser.add_argument(
        "--py-spy", type=Path, metavar="PATH", help="profile our server's rate runs (raw stacks)"
    )
    args = parser.parse_args()
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
        if BEFORE not in args.servers:
            args.servers.insert(1, BEFORE)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="realtime-storm-"))
    import uvloop

    uvloop.run(run(args, log_dir))


if __name__ == "__main__":
    main()
