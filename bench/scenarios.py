"""The benchmark scenarios. Each starts the server kind it is given (pinned to the server
core), runs, stops it, and returns its metrics as a flat dict.

Cores: the server under test alone on the server core; the load generator (this
process), Redis, the publisher and our worker share the client core, and their CPU is
reported per step so the load generator's headroom is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procstat
from bench.loadgen import Clients, Tally, open_clients
from bench.probe import Probe
from bench.servers import (
    NODE,
    OURS,
    BenchError,
    Proc,
    Publisher,
    start_server,
    start_worker,
)
from bench.stepping import RateSearch
from realtime.dev.embedded import RedisServer, free_port
from realtime.loadtest import stamped

P99_LIMIT_MS = 250.0
MAX_OVERLOAD = 150_000.0  # deliveries/s: past this the load generator would be the limit
LOSS_LIMIT = 0.001
# Pipeline: every 10th client is in the latency probe (bench.probe).
PIPELINE_PROBE_EVERY = 10
PIPELINE_SHARES = (0.25, 0.5, 1.0)  # of the profile's rate: the pipeline's steps


@dataclass(frozen=True)
class Profile:
    """Sizes and durations: --quick (smoke), default, --full."""

    idle_clients: int
    fanout_subscribers: int
    topics: int
    per_topic: int
    step_s: float
    refinements: int
    start_rate: float  # deliveries/s of the first step
    overload_factor: float
    pipeline_subscribers: int
    pipeline_rate: float  # events/s
    pipeline_s: float
    bystander_rate: float  # events/s to a topic nobody watches
    hosted_rate: float  # events/s to a topic one instance of four hosts
    hosted_s: float
    max_drain_s: float = 2.0
    small_topics: int = 1000  # `small-topics`: this many topics x 1 subscriber
    # deliveries/s of the step at which the topic scenarios compare CPU per delivery:
    # every server sustains it, so each is measured at the same load
    fixed_rate: float = 5_000.0


QUICK = Profile(
    300, 100, 10, 10, 1.0, 0, 500, 3.0, 100, 20, 2.0, 200, 500, 1.0,
    small_topics=100, fixed_rate=2000.0,
)  # fmt: skip
DEFAULT = Profile(5000, 1000, 100, 10, 2.0, 2, 1000, 3.0, 1000, 100, 5.0, 500, 2000, 4.0)
FULL = Profile(10_000, 1000, 100, 10, 5.0, 3, 1000, 3.0, 1000, 100, 30.0, 500, 2000, 10.0)


@dataclass
class Bench:
    redis: RedisServer
    server_cpus: set[int]
    client_cpus: set[int]
    log_dir: Path
    profile: Profile
    deflate: bool = True
    progress: Callable[[str], None] = print
    _step: int = 0

    @classmethod
    def pinned(
        cls,
        *,
        server_cpu: int,
        client_cpu: int,
        log_dir: Path,
        profile: Profile,
        deflate: bool = True,
        progress: Callable[[str], None] = print,
    ) -> Bench:
        """A Bench with a Redis of its own started, it and this process (the load
        generator) pinned to the client core; `bench.redis.cleanup()` when done."""
        os.sched_setaffinity(0, {client_cpu})
        redis = RedisServer(directory=log_dir / "redis").start()
        assert redis.process is not None
        for tid in os.listdir(f"/proc/{redis.process.pid}/task"):
            os.sched_setaffinity(int(tid), {client_cpu})
        return cls(
            redis=redis,
            server_cpus={server_cpu},
            client_cpus={client_cpu},
            log_dir=log_dir,
            profile=profile,
            deflate=deflate,
            progress=progress,
        )

    @property
    def redis_pid(self) -> int:
        assert self.redis.process is not None, "Redis is not running"
        return self.redis.process.pid

    def next_step(self) -> int:
        self._step += 1
        return self._step

    async def flush_redis(self) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(self.redis.url)
        try:
            await client.flushall()
        finally:
            await client.aclose()


@dataclass
class Deployment:
    """The running processes of one server kind for one scenario."""

    kind: str
    servers: list[Proc]
    urls: list[str]
    publisher: Publisher
    worker: Proc | None = None
    probe: Probe | None = None  # the pipeline's stamped subscribers (bench.probe)

    def client_side(self) -> list[Proc]:
        procs = [self.publisher.proc]
        return [*procs, self.worker] if self.worker is not None else procs

    def load_generator(self) -> list[Proc]:
        """Load generator processes besides this one."""
        return [self.probe.proc] if self.probe is not None else []


@contextlib.asynccontextmanager
async def deploy(
    bench: Bench,
    kind: str,
    instances: int = 1,
    mode: str = "stream",
    worker_env: dict[str, str] | None = None,
    code: Path | None = None,
) -> AsyncIterator[Deployment]:
    """`worker_env`: more variables for our worker; `code`: run ours from that checkout."""
    await bench.flush_redis()
    servers: list[Proc] = []
    worker: Proc | None = None
    publisher: Publisher | None = None
    dep: Deployment | None = None
    try:
        urls = []
        for i in range(instances):
            port = free_port()
            servers.append(
                await start_server(
                    kind,
                    port,
                    bench.redis.url,
                    bench.server_cpus,
                    bench.log_dir,
                    f"{kind}-{i}",
                    code,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        if kind == OURS:
            worker = await start_worker(
                bench.redis.url, bench.client_cpus, bench.log_dir, worker_env, code
            )
        pub_mode = mode if kind == OURS else ("pysio" if kind != NODE else "node")
        publisher = await Publisher.start(
            kind, pub_mode, bench.redis.url, urls[0], bench.client_cpus, bench.log_dir
        )
        dep = Deployment(kind, servers, urls, publisher, worker)
        yield dep
    finally:
        if dep is not None and dep.probe is not None:
            await dep.probe.stop()
        if publisher is not None:
            await publisher.stop()
        if worker is not None:
            await worker.stop()
        for server in servers:
            await server.stop()


@dataclass
class StepStats:
    rate: float  # deliveries/s asked for
    published: int
    expected: int
    delivered: int
    packets: int
    delivered_in_window: int
    publish_s: float
    wall_s: float  # publishing and the drain after it: what the CPU figures cover
    p50_ms: float
    p99_ms: float
    arrival_p50_ms: float  # stamped clients (NaN without): at the socket, see loadgen.Tally
    arrival_p99_ms: float
    server_cpu_s: float
    client_core_busy: float  # fraction of the client core: load generator + Redis + publisher
    loadgen_busy: float
    loadgen_cpu_s: float

    @property
    def loss(self) -> float:
        return 1 - self.delivered / self.expected if self.expected else 0.0

    @property
    def ok(self) -> bool:
        return self.loss <= LOSS_LIMIT and self.p99_ms <= P99_LIMIT_MS

    @property
    def window_rate(self) -> float:
        """Deliveries per second received while the publisher was publishing."""
        return self.delivered_in_window / self.publish_s if self.publish_s > 0 else 0.0

    @property
    def events_per_packet(self) -> float:
        return self.delivered / self.packets if self.packets else math.nan

    @property
    def us_per_delivery(self) -> float:
        return self.server_cpu_s / self.delivered * 1e6 if self.delivered else math.nan


async def settle(tally: Tally, quiet_s: float = 0.5, max_s: float = 60.0) -> None:
    """Wait until nothing has arrived for `quiet_s` (a backlog from an overloaded step)."""
    deadline = time.monotonic() + max_s
    last = tally.seen
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if tally.seen != last:
            last = tally.seen
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return


async def run_step(
    bench: Bench,
    dep: Deployment,
    tally: Tally,
    topics: list[str],
    per_topic: int,
    deliveries_per_s: float,
    duration_s: float,
) -> StepStats:
    events_per_s = deliveries_per_s / per_topic
    count = max(1, round(events_per_s * duration_s))
    expected = count * per_topic
    probed = count * dep.probe.clients if dep.probe is not None else 0
    step = bench.next_step()
    tally.reset(step)
    if dep.probe is not None:
        await dep.probe.step(step)
    client_procs = [*dep.client_side()]
    loadgen_procs = dep.load_generator()
    server0 = sum(p.cpu() for p in dep.servers)
    client0 = sum(p.cpu() for p in client_procs) + procstat.cpu_seconds(bench.redis_pid)
    self0 = procstat.self_cpu_seconds() + sum(p.cpu() for p in loadgen_procs)
    wall0 = time.monotonic()
    answer = await dep.publisher.publish(topics, events_per_s, count, step)
    publish_s = time.monotonic() - wall0
    in_window = tally.delivered
    deadline = time.monotonic() + bench.profile.max_drain_s
    last, last_change = tally.delivered, time.monotonic()
    while tally.delivered < expected - probed and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if tally.delivered != last:
            last, last_change = tally.delivered, time.monotonic()
        elif last and time.monotonic() - last_change > 0.5:
            break  # deliveries started, then stopped: the rest is lost
    if dep.probe is not None:
        await dep.probe.collect_into(tally, count, max(deadline - time.monotonic(), 0.5))
    wall = time.monotonic() - wall0
    server_cpu = sum(p.cpu() for p in dep.servers) - server0
    self_cpu = procstat.self_cpu_seconds() + sum(p.cpu() for p in loadgen_procs) - self0
    client_cpu = (
        sum(p.cpu() for p in client_procs) + procstat.cpu_seconds(bench.redis_pid) - client0
    )
    for proc in dep.servers:
        proc.check_alive()
    stats = StepStats(
        rate=deliveries_per_s,
        published=int(answer["published"]),
        expected=expected,
        delivered=tally.delivered,
        packets=tally.packets,
        delivered_in_window=in_window,
        publish_s=publish_s,
        wall_s=wall,
        p50_ms=tally.latency.percentile(50),
        p99_ms=tally.latency.percentile(99),
        arrival_p50_ms=tally.arrival.percentile(50),
        arrival_p99_ms=tally.arrival.percentile(99),
        server_cpu_s=server_cpu,
        client_core_busy=(client_cpu + self_cpu) / wall,
        loadgen_busy=self_cpu / wall,
        loadgen_cpu_s=self_cpu,
    )
    bench.progress(
        f"    {deliveries_per_s:>9,.0f}/s  delivered {stats.delivered:>8,}/{expected:<8,}"
        f" p50 {stats.p50_ms:7.1f} ms  p99 {stats.p99_ms:7.1f} ms"
        f"  server {stats.us_per_delivery:6.1f} us/delivery"
        f"  {stats.events_per_packet:4.1f} ev/packet"
        f"  loadgen {stats.loadgen_busy:4.0%} client core {stats.client_core_busy:4.0%}"
        f"  {'ok' if stats.ok else 'FAIL'}"
    )
    if tally.arrival.count:
        bench.progress(
            f"      at the socket (stamped clients): p50 {stats.arrival_p50_ms:.1f} ms"
            f"  p99 {stats.arrival_p99_ms:.1f} ms; publisher -> ingest accepted p50"
            f" {tally.to_ingest.percentile(50):.1f} p99 {tally.to_ingest.percentile(99):.1f},"
            f" accepted -> socket p50 {tally.from_ingest.percentile(50):.1f}"
            f" p99 {tally.from_ingest.percentile(99):.1f} ms"
        )
    if not stats.ok:
        await settle(tally)
    return stats


async def find_sustained(
    bench: Bench, dep: Deployment, tally: Tally, topics: list[str], per_topic: int
) -> dict[str, Any]:
    """Step the rate: max sustained deliveries/s, then the overloaded ceiling."""
    profile = bench.profile
    await run_step(bench, dep, tally, topics, per_topic, profile.start_rate / 2, 1.0)  # warm-up
    # Below one event per second per topic a step says little: that is the floor.
    search = RateSearch(
        max(profile.start_rate, per_topic),
        factor=2.0,
        refinements=profile.refinements,
        floor=per_topic,
    )
    steps: list[StepStats] = []
    while (rate := search.next_rate()) is not None:
        stats = await run_step(bench, dep, tally, topics, per_topic, rate, profile.step_s)
        steps.append(stats)
        if not stats.ok:
            # A failure must repeat: on a shared machine any server can be stalled for a
            # moment by someone else's process, and one stall fails a short step.
            stats = await run_step(bench, dep, tally, topics, per_topic, rate, profile.step_s)
            steps.append(stats)
        search.record(rate, stats.ok)
    best = max((s for s in steps if s.ok), key=lambda s: s.rate, default=None)
    failed = [s for s in steps if not s.ok]
    # Overload: well past the best rate and past what the server's CPU per delivery allows
    # (a server that fails on latency early was never pushed to its throughput).
    # (A short step can read 0 CPU: the kernel counts it in 10 ms ticks.)
    cpu_bound = max((1e6 / s.us_per_delivery for s in steps if s.us_per_delivery > 0), default=0.0)
    floor = max(search.best, profile.start_rate) * profile.overload_factor
    over_rate = max(floor, min(cpu_bound * 2, MAX_OVERLOAD))
    bench.progress(f"    overload at {over_rate:,.0f}/s:")
    sustained = {
        "sustained_per_s": search.best,
        "sustained_p50_ms": best.p50_ms if best else math.nan,
        "sustained_p99_ms": best.p99_ms if best else math.nan,
        "sustained_us_per_delivery": best.us_per_delivery if best else math.nan,
        "sustained_events_per_packet": best.events_per_packet if best else math.nan,
    }
    try:
        over = await run_step(bench, dep, tally, topics, per_topic, over_rate, profile.step_s)
    except (BenchError, OSError) as exc:
        # The Node reference's Redis adapter has died here at 1,000 topics ("N trailing
        # bytes" from its msgpack decoder): what it sustained still stands.
        bench.progress(f"    the server did not survive the overload: {exc}".splitlines()[0])
        return {**sustained, "overload_died": 1}
    await settle(tally)
    return {
        **sustained,
        "overload_died": 0,
        "overloaded_per_s": over.window_rate,
        "overloaded_us_per_delivery": over.server_cpu_s / over.delivered_in_window * 1e6
        if over.delivered_in_window
        else math.nan,
        "overloaded_events_per_packet": over.events_per_packet,
        "loadgen_cpu_max": max(s.loadgen_busy for s in [*steps, over]),
        # What one core of load generator could receive, from its busiest step.
        "loadgen_capacity_per_s": over.packets / over.loadgen_cpu_s
        if over.loadgen_cpu_s > 0
        else math.nan,
        "client_core_max": max(s.client_core_busy for s in [*steps, over]),
        "steps": len(steps) + 1,
        "first_failure": _failure_reason(failed[0]) if failed else None,
    }


def _failure_reason(step: StepStats) -> str:
    why = []
    if step.p99_ms > P99_LIMIT_MS:
        why.append(f"p99 {step.p99_ms:.0f} ms")
    if step.loss > LOSS_LIMIT:
        why.append(f"loss {step.loss:.2%}")
    return f"{step.rate:,.0f}/s: " + ", ".join(why)


def _topic_names(n: int) -> list[str]:
    return [f"bench.t{i}" for i in range(n)]


# -- scenarios ----------------------------------------------------------------------------


async def idle(bench: Bench, kind: str) -> dict[str, Any]:
    """Idle connections: RSS per connection at N, connect rate and connect time."""
    n = bench.profile.idle_clients
    async with deploy(bench, kind) as dep:
        server = dep.servers[0]
        await asyncio.sleep(1.0)  # let start-up allocations settle
        base = server.rss_kib()
        tally = Tally()
        self0 = procstat.self_cpu_seconds()
        clients = await open_clients(dep.urls, n, lambda i: None, tally, deflate=bench.deflate)
        loadgen = (procstat.self_cpu_seconds() - self0) / clients.elapsed_s
        try:
            await asyncio.sleep(2.0)
            rss = server.rss_kib()
            alive = sum(1 for c in clients.clients if c.is_open)
        finally:
            clients.close()
    bench.progress(
        f"    {alive:,} connections: {(rss - base) / max(alive, 1):.1f} KiB each, "
        f"{clients.rate:,.0f} connects/s, loadgen {loadgen:.0%}"
    )
    return {
        "connections": alive,
        "failures": clients.failures,
        "kib_per_connection": (rss - base) / max(alive, 1),
        "rss_mib": rss / 1024,
        "connects_per_s": clients.rate,
        "connect_p50_ms": clients.connect_p(50),
        "connect_p99_ms": clients.connect_p(99),
        "loadgen_cpu_max": loadgen,
    }


async def _fanout(
    bench: Bench,
    kind: str,
    n_topics: int,
    per_topic: int,
    instances: int = 1,
    *,
    fixed: bool = False,
) -> dict[str, Any]:
    topics = _topic_names(n_topics)
    tally = Tally()
    async with deploy(bench, kind, instances) as dep:
        clients = await open_clients(
            dep.urls, n_topics * per_topic, lambda i: topics[i % n_topics], tally,
            deflate=bench.deflate,
        )  # fmt: skip
        try:
            _check_clients(clients, n_topics * per_topic)
            result = {}
            if fixed:  # first: a reference's overloaded step may not leave it whole
                result.update(await _fixed_rate(bench, dep, tally, topics, per_topic))
            result.update(await find_sustained(bench, dep, tally, topics, per_topic))
            if instances > 1:
                result.update(await _bystander(bench, dep, tally))
        finally:
            clients.close()
    return result


async def _fixed_rate(
    bench: Bench, dep: Deployment, tally: Tally, topics: list[str], per_topic: int
) -> dict[str, Any]:
    """CPU per delivery at the profile's fixed rate, the same for every server: CPU per
    delivery at each one's own sustained rate compares different loads (a busier server
    packs more into each read and write)."""
    rate = bench.profile.fixed_rate
    await asyncio.sleep(1.0)  # connecting settles
    idle = await _cpu_rate(dep.servers, bench.profile.step_s)
    bench.progress(f"    fixed rate {rate:,.0f}/s (server idle: {idle:.1%} of a core):")
    await run_step(bench, dep, tally, topics, per_topic, rate / 2, 1.0)  # warm-up
    stats = await run_step(bench, dep, tally, topics, per_topic, rate, bench.profile.step_s * 2)
    await settle(tally)
    wall = stats.wall_s
    busy = stats.server_cpu_s / wall if wall > 0 else math.nan
    net = (stats.server_cpu_s - idle * wall) / stats.delivered * 1e6 if stats.delivered else 0
    return {
        "fixed_us_per_delivery": stats.us_per_delivery,
        "fixed_net_us_per_delivery": max(net, 0.0),
        "fixed_server_busy": busy,
        "idle_server_busy": idle,
        "fixed_p99_ms": stats.p99_ms,
        "fixed_loss": stats.loss,
    }


def _check_clients(clients: Clients, want: int) -> None:
    if len(clients.clients) != want:
        raise BenchError(f"only {len(clients.clients)} of {want} clients connected")


async def _bystander(bench: Bench, dep: Deployment, tally: Tally) -> dict[str, Any]:
    """CPU an instance spends per event of a topic none of its clients watch, less what it
    spends in the same time with no traffic (pings, timers of its idle connections)."""
    rate = bench.profile.bystander_rate
    count = max(1, round(rate * bench.profile.step_s))
    quiet = [p.cpu() for p in dep.servers]
    started = time.monotonic()
    await asyncio.sleep(bench.profile.step_s + 0.5)
    idle_per_s = sum(p.cpu() - c for p, c in zip(dep.servers, quiet, strict=True)) / (
        time.monotonic() - started
    )
    cpu0 = [p.cpu() for p in dep.servers]
    started = time.monotonic()
    tally.reset(bench.next_step())
    await dep.publisher.publish(["bench.nobody"], rate, count, tally.step)
    await asyncio.sleep(0.5)  # let the instances finish what Redis delivered
    used = sum(p.cpu() - c for p, c in zip(dep.servers, cpu0, strict=True))
    used -= idle_per_s * (time.monotonic() - started)
    per_event = max(used, 0.0) / len(dep.servers) / count * 1e6
    bench.progress(f"    topic without subscribers: {per_event:.1f} us per event per instance")
    return {"unwatched_us_per_event": per_event}


async def fanout(bench: Bench, kind: str) -> dict[str, Any]:
    """1 topic x N subscribers on one instance."""
    return await _fanout(bench, kind, 1, bench.profile.fanout_subscribers)


async def topics(bench: Bench, kind: str) -> dict[str, Any]:
    """100 topics x 10 subscribers on one instance."""
    profile = bench.profile
    return await _fanout(bench, kind, profile.topics, profile.per_topic, fixed=True)


async def small_topics(bench: Bench, kind: str) -> dict[str, Any]:
    """1,000 topics x 1 subscriber on one instance: every delivery is an event of its
    own, so the per-event and per-room costs are all there is."""
    return await _fanout(bench, kind, bench.profile.small_topics, 1, fixed=True)


async def two_instances(bench: Bench, kind: str) -> dict[str, Any]:
    """1 topic x N subscribers split over two instances sharing Redis (both on the server
    core), then the cost of traffic for a topic that neither instance hosts."""
    return await _fanout(bench, kind, 1, bench.profile.fanout_subscribers, instances=2)


async def four_instances(bench: Bench, kind: str) -> dict[str, Any]:
    """Ours only: four instances, a client on each, the first one's subscribed to a topic,
    events on that topic at a fixed rate. The CPU the other three spend on that traffic, with
    the events published on the topic's channel (interest-based: they are not subscribed)
    and, as the reference, on the common channel every instance decodes (the worker's
    publishing before interest-based fan-out; the instances' code path is the same)."""
    if kind != OURS:
        return {}
    profile = bench.profile
    topic = "bench.hosted"
    tally = Tally()
    result: dict[str, Any] = {}
    async with deploy(bench, kind, instances=4, mode="publish") as dep:
        # Every instance has a client (a listener starts with the first connection); the
        # first one's watches the topic, the others' a topic of their own.
        clients = await open_clients(
            dep.urls,
            4,
            lambda i: topic if i == 0 else f"bench.other{i}",
            tally,
            deflate=bench.deflate,
        )
        try:
            _check_clients(clients, 4)
            others = dep.servers[1:]
            await asyncio.sleep(1.0)  # start-up settles
            idle = await _cpu_rate(others, profile.hosted_s)
            count = max(1, round(profile.hosted_rate * profile.hosted_s))
            for variant in ("topic", "common"):
                tally.reset(bench.next_step())
                cpu0 = [p.cpu() for p in others]
                started = time.monotonic()
                await dep.publisher.publish(
                    [topic], profile.hosted_rate, count, tally.step, channel=variant
                )
                await asyncio.sleep(0.5)  # what Redis delivered is handled
                raw = sum(p.cpu() - c for p, c in zip(others, cpu0, strict=True))
                baseline = idle * (time.monotonic() - started)
                per_event = max(raw - baseline, 0.0) / len(others) / count * 1e6
                result[f"{variant}_cpu_ms"] = raw * 1000
                result[f"{variant}_idle_cpu_ms"] = baseline * 1000
                if tally.delivered != count:
                    raise BenchError(f"{variant}: {tally.delivered} of {count} delivered")
                bench.progress(
                    f"    {variant} channel: the 3 instances not hosting it spend"
                    f" {per_event:.2f} us per event each"
                )
                result[f"{variant}_us_per_event"] = per_event
        finally:
            clients.close()
    result["ratio"] = (
        result["topic_us_per_event"] / result["common_us_per_event"]
        if result["common_us_per_event"] > 0
        else math.nan
    )
    bench.progress(f"    interest-based / common channel: {result['ratio']:.1%}")
    return result


async def _cpu_rate(procs: list[Proc], seconds: float) -> float:
    """CPU seconds per second the processes spend with no traffic."""
    cpu0 = [p.cpu() for p in procs]
    started = time.monotonic()
    await asyncio.sleep(seconds)
    return sum(p.cpu() - c for p, c in zip(procs, cpu0, strict=True)) / (time.monotonic() - started)


async def _open_probed(
    bench: Bench, dep: Deployment, subscribers: int, topic: str, tally: Tally
) -> Clients:
    """`subscribers` clients of `topic`, every PIPELINE_PROBE_EVERY-th one in the probe,
    connected in rounds so the probe's are spread through the room (a batch reaches the
    room's members in the order they joined)."""
    if dep.probe is None:
        return await open_clients(
            dep.urls, subscribers, lambda i: topic, tally, deflate=bench.deflate
        )
    opened: list[Clients] = []
    per_round = PIPELINE_PROBE_EVERY * 10
    for start in range(0, subscribers, per_round):
        n = min(per_round, subscribers - start)
        probed = n // PIPELINE_PROBE_EVERY
        opened.append(
            await open_clients(dep.urls, n - probed, lambda i: topic, tally, deflate=bench.deflate)
        )
        answer = await dep.probe.connect(probed)
        if answer["connected"] != probed:
            raise BenchError(f"the probe connected {answer['connected']} of {probed} clients")
    return Clients(
        [c for group in opened for c in group.clients],
        sorted(t for group in opened for t in group.connect_ms),
        sum(group.elapsed_s for group in opened),
        sum(group.failures for group in opened),
    )


async def pipeline(bench: Bench, kind: str) -> dict[str, Any]:
    """Ours only: HTTP ingest -> stream -> worker -> clients, latency at fixed rates: a
    quarter of the profile's rate, half, then all of it (the headline)."""
    if kind != OURS:
        return {}
    profile = bench.profile
    topic = ["bench.pipeline"]
    tally = Tally()
    subscribers = profile.pipeline_subscribers
    result: dict[str, Any] = {"events_per_s": profile.pipeline_rate, "subscribers": subscribers}
    async with deploy(bench, kind, mode="http") as dep:
        if stamped.supported():
            dep.probe = await Probe.start(
                dep.urls, topic[0], bench.deflate, bench.client_cpus, bench.log_dir
            )
        clients = await _open_probed(bench, dep, subscribers, topic[0], tally)
        try:
            _check_clients(clients, subscribers - (dep.probe.clients if dep.probe else 0))
            rate = profile.pipeline_rate * subscribers
            await run_step(bench, dep, tally, topic, subscribers, rate / 4, 1.0)  # warm-up
            for share in PIPELINE_SHARES:
                step = await run_step(
                    bench, dep, tally, topic, subscribers, rate * share, profile.pipeline_s
                )
                if share < 1:
                    result[f"arrival_p50_ms_{share:.0%}"] = step.arrival_p50_ms
                    result[f"arrival_p99_ms_{share:.0%}"] = step.arrival_p99_ms
        finally:
            clients.close()
    result.update(
        {
            "arrival_p50_ms": step.arrival_p50_ms,
            "arrival_p99_ms": step.arrival_p99_ms,
            "p50_ms": step.p50_ms,
            "p99_ms": step.p99_ms,
            "to_ingest_p99_ms": tally.to_ingest.percentile(99),
            "from_ingest_p99_ms": tally.from_ingest.percentile(99),
            "loss": step.loss,
            "events_per_packet": step.events_per_packet,
            "us_per_delivery": step.us_per_delivery,
            "loadgen_cpu_max": step.loadgen_busy,
            "client_core_max": step.client_core_busy,
        }
    )
    return result


SCENARIOS: dict[str, Callable[[Bench, str], Any]] = {
    "idle": idle,
    "fanout": fanout,
    "topics": topics,
    "small-topics": small_topics,
    "two-instances": two_instances,
    "four-instances": four_instances,
    "pipeline": pipeline,
}
