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

Server pinned to `--server-cpu`; Redis, the worker, the publisher and `--procs` load
processes (`python -m bench.storm --child`) to `--client-cpu`; their CPU is printed so a
load generator at its limit shows. Each load process connects from its own source
address (127.0.0.2, ...) with a raised open-files limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
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

import jwt

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
from realtime.core import jsoncodec
from realtime.dev.embedded import RedisServer, free_port
from realtime.loadtest import wsclient
from realtime.loadtest.stats import percentile

SECRET = "bench-storm-secret-" + "s" * 40
SNAPSHOT = 10  # events in each subscribe's snapshot (ours and Node's)
RATE_TOPICS = [f"rate.{n}" for n in range(10)]
HISTORY = 100  # entries in each rate topic's history
NOFILE = 20_000
BEFORE = "before"  # our server, the code of `--baseline DIR`


# A reconnecting client waits as socket.io-client's defaults make it: a connect
# given up after 20 s, then 1 s, 2 s, 4 s, 5 s, ... between tries, each +-50%.
CONNECT_TIMEOUT_S = 20.0


def retry_delay_s(attempt: int) -> float:
    return min(5.0, 2.0**attempt) * (0.5 + random.random())


def now_ms() -> float:
    return time.time() * 1000.0


def token(child: int, i: int) -> str:
    claims = {"sub": f"user-{child}-{i}", "topics": ["rate.*", "storm.*"]}
    return jwt.encode({**claims, "exp": int(time.time()) + 7200}, SECRET, "HS256")


# -- the load processes ---------------------------------------------------------------------


class Watcher:
    """One storm subscriber: its topic's events checked for gaps and repeats (their
    `seq` grows by `step` per topic), and the times of its reconnect."""

    __slots__ = (
        "acked",
        "client",
        "dups",
        "first_update",
        "gaps",
        "last_id",
        "last_seq",
        "reconnect",
        "recovered",
        "refused",
        "retries",
        "step",
        "token",
        "topic",
    )

    def __init__(self, topic: str, step: int, token: str) -> None:
        self.topic = topic
        self.step = step
        self.token = token
        self.client: wsclient.SioWebSocket | None = None
        self.last_id: str | None = None
        self.last_seq: int | None = None
        self.gaps = 0
        self.dups = 0
        self.refused = 0  # reconnects answered `recovered: false`
        self.retries = 0
        self.reconnect: float | None = None  # wall ms the reconnect began
        self.acked: float | None = None
        self.first_update: float | None = None
        self.recovered: float | None = None  # first event published after `reconnect`

    def on_update(self, client: Any, events: list[Any], at_ms: float) -> None:
        for event in events:
            if event["topic"] != self.topic:
                continue
            data = event["data"]
            seq = data["seq"]
            last = self.last_seq
            if last is not None:
                if seq <= last:
                    self.dups += 1
                    continue
                if seq != last + self.step:
                    self.gaps += (seq - last) // self.step - 1
            self.last_seq = seq
            self.last_id = event["id"]
            if self.reconnect is not None:
                if self.first_update is None:
                    self.first_update = at_ms
                if self.recovered is None and data["t"] >= self.reconnect:
                    self.recovered = at_ms


class Child:
    def __init__(self, index: int, local_host: str) -> None:
        self.index = index
        self.local_host = local_host
        self.tokens: list[str] = []
        self.watchers: list[Watcher] = []
        self.pending: set[asyncio.Task[None]] = set()

    def tokens_for(self, count: int) -> list[str]:
        while len(self.tokens) < count:
            self.tokens.append(token(self.index, len(self.tokens)))
        return self.tokens[:count]

    async def _open(self, url: str, auth: dict[str, Any], **kw: Any) -> wsclient.SioWebSocket:
        kw.setdefault("timeout", 30.0)
        return await wsclient.connect(
            url, auth=auth, deflate=False, local_host=self.local_host, **kw
        )

    async def rate(self, job: dict[str, Any]) -> dict[str, Any]:
        """Connect, subscribe with a snapshot, wait for it: `count` clients."""
        url, topics, count = job["url"], job["topics"], job["count"]
        tokens = self.tokens_for(count)
        gate = asyncio.Semaphore(job["concurrency"])
        clients: list[wsclient.SioWebSocket] = []
        times: list[float] = []
        failures = 0
        reasons: dict[str, int] = {}

        async def one(i: int) -> None:
            nonlocal failures
            async with gate:
                started = time.perf_counter()
                try:
                    client = await self._open(url, {"token": tokens[i]})
                    clients.append(client)
                    ack = await client.call(
                        "subscribe",
                        {"topic": topics[i % len(topics)], "snapshot": SNAPSHOT},
                        timeout=30.0,
                    )
                except (OSError, TimeoutError, ValueError) as exc:
                    failures += 1
                    reason = f"{type(exc).__name__}: {exc}"[:120]
                    reasons[reason] = reasons.get(reason, 0) + 1
                    return
                if not (isinstance(ack, dict) and ack.get("ok")) or len(ack["events"]) != SNAPSHOT:
                    failures += 1
                    reason = str(ack)[:120]
                    reasons[reason] = reasons.get(reason, 0) + 1
                    return
                times.append((time.perf_counter() - started) * 1000)

        start = now_ms()
        await asyncio.gather(*(one(i) for i in range(count)))
        end = now_ms()
        for client in clients:
            client.abort()
        answer = {"ok": len(times), "failures": failures, "start": start, "end": end, "ms": times}
        return {**answer, "reasons": reasons}

    async def hold(self, job: dict[str, Any]) -> dict[str, Any]:
        """`count` subscribers, client i on topic i % len(topics), kept connected."""
        url, topics, count = job["url"], job["topics"], job["count"]
        tokens = self.tokens_for(count)
        self.watchers = [
            Watcher(topics[i % len(topics)], len(topics), tokens[i]) for i in range(count)
        ]
        gate = asyncio.Semaphore(job["concurrency"])

        async def one(w: Watcher) -> None:
            async with gate:
                w.client = await self._open(url, {"token": w.token}, on_update=w.on_update)
                ack = await w.client.call("subscribe", {"topic": w.topic}, timeout=30.0)
                if not (isinstance(ack, dict) and ack.get("ok")):
                    raise RuntimeError(f"subscribe refused: {ack}")
                if w.last_id is None:
                    w.last_id = ack["since"]

        await asyncio.gather(*(one(w) for w in self.watchers))
        return {"connected": len(self.watchers)}

    async def _reconnect(self, url: str, w: Watcher, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        w.reconnect = now_ms()
        attempt = 0
        while True:
            try:
                w.client = await self._open(
                    url, {"token": w.token}, on_update=w.on_update, timeout=CONNECT_TIMEOUT_S
                )
                ack = await w.client.call(
                    "subscribe", {"topic": w.topic, "since": w.last_id}, timeout=30.0
                )
                if not (isinstance(ack, dict) and ack.get("ok")):
                    raise ConnectionError(f"subscribe refused: {ack}")
                w.acked = now_ms()
                if not ack.get("recovered"):
                    w.refused += 1
                return
            except (OSError, TimeoutError, ValueError):
                w.retries += 1
                if w.client is not None:
                    w.client.abort()
                await asyncio.sleep(retry_delay_s(attempt))
                attempt += 1

    def drop(self, job: dict[str, Any]) -> dict[str, Any]:
        """Abort every socket now; each client reconnects within `window_s`."""
        dropped = now_ms()
        for w in self.watchers:
            if w.client is not None:
                w.client.abort()
        for w in self.watchers:
            task = asyncio.create_task(
                self._reconnect(job["url"], w, random.random() * job["window_s"])
            )
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        return {"dropped": dropped}

    async def report(self, job: dict[str, Any]) -> dict[str, Any]:
        """Wait until every client recovered (or `wait_s`); their times."""
        deadline = time.monotonic() + job["wait_s"]
        while time.monotonic() < deadline and (  # noqa: ASYNC110 (polls many clients)
            self.pending or any(w.recovered is None for w in self.watchers)
        ):
            await asyncio.sleep(0.05)
        ws = self.watchers
        return {
            "reconnect": [w.reconnect for w in ws],
            "acked": [w.acked for w in ws],
            "first_update": [w.first_update for w in ws],
            "recovered": [w.recovered for w in ws],
            "retries": sum(w.retries for w in ws),
            "refused": sum(w.refused for w in ws),
        }

    def verify(self, job: dict[str, Any]) -> dict[str, Any]:
        """Gaps, repeats, and clients whose last event is not the topic's last one."""
        last: dict[str, int] = job["last"]
        return {
            "gaps": sum(w.gaps for w in self.watchers),
            "dups": sum(w.dups for w in self.watchers),
            "behind": sum(w.last_seq != last[w.topic] for w in self.watchers),
        }

    def close(self) -> None:
        for task in self.pending:
            task.cancel()
        for w in self.watchers:
            if w.client is not None:
                w.client.abort()
        self.watchers = []


async def child_main(index: int, local_host: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, NOFILE), hard), hard))
    child = Child(index, local_host)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = jsoncodec.loads(line)
        name, job = next(iter(command.items()))
        if name == "rate":
            answer = await child.rate(job)
        elif name == "hold":
            answer = await child.hold(job)
        elif name == "drop":
            answer = child.drop(job)
        elif name == "report":
            answer = await child.report(job)
        elif name == "verify":
            answer = child.verify(job)
        elif name == "close":
            child.close()
            answer = {}
        elif name == "tokens":
            child.tokens_for(job["count"])
            answer = {}
        else:
            answer = {"error": f"unknown command {name!r}"}
        sys.stdout.write(jsoncodec.dumps(answer) + "\n")
        sys.stdout.flush()


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
        *("record", "--format", "raw", "--rate", "250", "--pid", str(proc.pid)),
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
        spy = None
        if setup.py_spy is not None and kind == OURS:
            spy = await asyncio.create_subprocess_exec(
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--format",
                "raw",
                "--rate",
                "250",
                "--pid",
                str(proc.pid),
                "--output",
                str(setup.py_spy),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)  # attached
        cpu0, load0, wall0 = proc.cpu(), setup.children_cpu(), time.monotonic()
        redis0 = procstat.cpu_seconds(setup.redis.process.pid)  # type: ignore[union-attr]
        answers = await setup.ask_all("rate", [job] * len(setup.children))
        wall = time.monotonic() - wall0
        cpu = proc.cpu() - cpu0
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
    print(head + f" {'p99 ms':>8} {'srv/load/redis busy':>20} {'fail':>5}")
    for kind, rs in results.items():
        rate, lo, hi = _median(rs, "connects_s")
        us, ulo, uhi = _median(rs, "server_us")
        busy = "/".join(
            f"{_median(rs, k)[0]:.0%}" for k in ("server_busy", "loadgen_busy", "redis_busy")
        )
        print(
            f"{kind:<10} {rate:>8,.0f} [{lo:,.0f}-{hi:,.0f}] {us:>9.0f} [{ulo:.0f}-{uhi:.0f}]"
            f" {1e6 / us:>9,.0f} {_median(rs, 'p99_ms')[0]:>8.1f} {busy:>20}"
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


async def storm_once(setup: Setup, args: argparse.Namespace) -> dict[str, float]:
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
        async with server(setup, OURS, "ours-storm") as (proc, url):
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
            storm_spy = setup.py_spy.with_suffix(".storm.txt") if setup.py_spy else None
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


def print_storm(runs: list[dict[str, float]], args: argparse.Namespace) -> None:
    print(
        f"\nreconnect storm: {args.storm:,} subscribers on {args.topics} topics, "
        f"{args.topic_rate:g} events/s per topic, all dropped, each reconnecting with "
        f"`since` within {args.window:g} s; median of {len(runs)} [min-max]"
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
    for label, key, fmt in rows:
        if key is None:
            print(f"  {label:<44} {_summed(runs, label)}")
            continue
        mid, lo, hi = _median(runs, key)
        print(f"  {label:<44} {fmt.format(mid)} [{fmt.format(lo)}-{fmt.format(hi)}]")


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
            cmd = [sys.executable, "-m", "bench.storm", "--child", str(n), f"127.0.0.{n + 2}"]
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
            storms = []
            for n in range(args.runs):
                print(f"[run {n + 1}/{args.runs}] reconnect storm", file=sys.stderr)
                storms.append(await storm_once(setup, args))
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
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import uvloop

        uvloop.run(child_main(int(sys.argv[2]), sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4000, help="connects per rate run")
    parser.add_argument("--concurrency", type=int, default=100, help="per load process")
    parser.add_argument("--servers", default="ours,node")
    parser.add_argument("--storm", type=int, default=10_000)
    parser.add_argument("--topics", type=int, default=5)
    parser.add_argument("--topic-rate", type=float, default=5.0, help="events/s per topic")
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
