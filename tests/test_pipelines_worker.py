"""Pipelines run by real worker processes against real Redis: window outputs on their
topics (history and live), routes, predicates, late events, and a bad file at start-up."""

from __future__ import annotations

import asyncio
import math
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from tests.helpers.clients import Collector, post_events
from tests.helpers.processes import ProcessGroup

pytestmark = pytest.mark.system

PIPELINES = """
pipelines:
  - name: metrics
    match: "metrics.*"
    drop_if: "value < 0"
    windows: {sizes: [1s, 2s], lateness: 300ms}
  - name: orders
    match: orders
    routes:
      - to: "orders.by_region.{region}"
        fallback: orders.by_region.unknown
  - name: legacy
    match: legacy.cpu
    passthrough: false
    routes: [{to: metrics.renamed}]
"""
T0 = 1_700_000_000_000  # a multiple of 2s: window starts are T0 + k * 1000


def pipelines_file(tmp_path: Path, lateness: str = "300ms") -> str:
    path = tmp_path / "pipelines.yaml"
    path.write_text(PIPELINES.replace("lateness: 300ms", f"lateness: {lateness}"))
    return str(path)


def summary(values: list[float]) -> dict[str, Any]:
    """What a window over `values` (in ts order) must say, percentiles aside."""
    total = math.fsum(values)
    return {
        "count": len(values),
        "sum": total,
        "min": min(values),
        "max": max(values),
        "avg": total / len(values),
        "last": values[-1],
    }


def rank(values: list[float], q: float) -> float:
    return sorted(values)[math.floor(q * (len(values) - 1))]


async def history(redis: Redis, settings: Settings, topic: str) -> list[tuple[str, Any]]:
    entries = await redis.xrange(Keys(settings.prefix).topic(topic))
    return [(i.decode(), jsoncodec.loads(f[b"data"])) for i, f in entries]


async def wait_history(
    redis: Redis, settings: Settings, topic: str, count: int, timeout: float = 20.0
) -> list[tuple[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = await history(redis, settings, topic)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_windows_routes_and_predicates_through_a_worker(
    processes: ProcessGroup, settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    settings = settings.with_overrides(pipelines_file=pipelines_file(tmp_path))
    web = processes.web(settings, REALTIME_PIPELINES=settings.pipelines_file)
    worker = processes.worker(settings, REALTIME_PIPELINES=settings.pipelines_file)
    watcher = await Collector("1s").connect(web.url)
    await watcher.subscribe("metrics.cpu:1s")

    rnd = random.Random(5)
    first = [round(rnd.uniform(0, 100), 3) for _ in range(150)]  # > 64: the sketch's bound
    second = [float(v) for v in (7, 3, 9, 1, 5)]  # exact percentiles
    events = [
        {"topic": "metrics.cpu", "ts": T0 + i, "data": {"value": v}} for i, v in enumerate(first)
    ]
    events += [
        {"topic": "metrics.cpu", "ts": T0 + 1000 + 100 * i, "data": {"value": v}}
        for i, v in enumerate(second)
    ]
    events.append({"topic": "metrics.cpu", "ts": T0 + 500, "data": {"value": -1}})  # dropped
    events.append({"topic": "metrics.cpu", "ts": T0 + 600, "data": {"value": "high"}})
    events += [
        {"topic": "orders", "data": {"region": "EU", "n": 1}},
        {"topic": "orders", "data": {"n": 2}},
        {"topic": "legacy.cpu", "ts": T0 + 10, "data": {"value": 4}},
        {"topic": "legacy.cpu", "ts": T0 + 20, "data": {"value": 6}},
    ]
    async with aiohttp.ClientSession() as http:
        for start in range(0, len(events), 50):
            await post_events(web.url, events[start : start + 50], http)

    one_s = await wait_history(redis, settings, "metrics.cpu:1s", 2)
    assert [i for i, _ in one_s] == [f"{T0 + 1000}-0", f"{T0 + 2000}-0"]
    (_, a), (_, b) = one_s
    assert a["window_start"] == T0
    assert a["window_end"] == T0 + 1000
    assert {k: a[k] for k in summary(first)} == summary(first)
    assert {k: b[k] for k in summary(second)} == summary(second)
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert math.isclose(a[name], rank(first, q), rel_tol=0.01), name
        assert b[name] == rank(second, q), name
    [(two_id, two)] = await wait_history(redis, settings, "metrics.cpu:2s", 1)
    assert two_id == f"{T0 + 2000}-0"
    assert {k: two[k] for k in ("count", "sum")} == {
        "count": len(first) + len(second),
        "sum": math.fsum(first + second),
    }
    # Live: the subscriber of the 1s topic got both windows, with the history ids.
    got = await watcher.wait_for(2)
    assert [e["id"] for e in got] == [i for i, _ in one_s]
    assert got[0]["ts"] == T0
    assert got[0]["data"] == a

    # The dropped and non-numeric events: not on the topic, not in any window.
    cpu = await history(redis, settings, "metrics.cpu")
    assert len(cpu) == len(first) + len(second) + 1
    assert [d for _, d in cpu].count({"value": -1}) == 0

    # Routes: group by region (with a fallback), and a rename that is then aggregated.
    eu = await wait_history(redis, settings, "orders.by_region.eu", 1)
    unknown = await wait_history(redis, settings, "orders.by_region.unknown", 1)
    assert [d for _, d in eu] == [{"region": "EU", "n": 1}]
    assert [d for _, d in unknown] == [{"n": 2}]
    assert len(await history(redis, settings, "orders")) == 2
    assert await history(redis, settings, "legacy.cpu") == []
    renamed = await wait_history(redis, settings, "metrics.renamed:1s", 1)
    assert [(d["count"], d["sum"]) for _, d in renamed] == [(2, 10.0)]
    await watcher.close()
    assert worker.process is not None
    assert worker.process.poll() is None


async def test_out_of_order_events_within_lateness_land_in_their_window(
    processes: ProcessGroup, settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """Lateness 300ms: an event 200ms behind the newest still counts; one whose window
    has closed is counted as late (the worker logs it), not merged."""
    path = pipelines_file(tmp_path)
    web = processes.web(settings, REALTIME_PIPELINES=path)
    worker = processes.worker(settings, REALTIME_PIPELINES=path)
    timeline = [  # (ts offset, value)
        (100, 1.0),
        (1100, 10.0),
        (900, 2.0),  # 200ms behind: window [0, 1000) is open until the watermark hits 1000
        (1200, 20.0),
        (2500, 30.0),  # watermark 2200: [0, 1000) and [1000, 2000) close
        (1500, 99.0),  # its window closed: late
        (2600, 40.0),
    ]
    await post_events(
        web.url,
        [{"topic": "metrics.ooo", "ts": T0 + t, "data": {"value": v}} for t, v in timeline],
    )
    windows = await wait_history(redis, settings, "metrics.ooo:1s", 3)
    assert [(d["window_start"] - T0, d["count"], d["sum"]) for _, d in windows] == [
        (0, 2, 3.0),
        (1000, 2, 30.0),
        (2000, 2, 70.0),
    ]
    assert windows[0][1]["last"] == 2.0  # the event with the latest ts, not the last to arrive
    deadline = time.monotonic() + 10
    while "1 late event(s) for pipeline metrics" not in worker.log():
        assert time.monotonic() < deadline, worker.log()
        await asyncio.sleep(0.05)


def test_the_worker_exits_on_an_invalid_file_naming_the_field(
    processes: ProcessGroup, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pipelines: [{name: m, match: 'metrics.*', windows: {lateness: 2x}}]\n")
    worker = processes.worker(settings, REALTIME_PIPELINES=str(path))
    assert worker.process is not None
    assert worker.process.wait(30) == 2
    assert "pipelines[0] (m).windows.lateness: not a duration: '2x'" in worker.log()


async def test_a_window_stays_exact_across_a_sigkilled_worker(
    processes: ProcessGroup, settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """Window [T0+1000, T0+2000) is fed by three owners in turn: A (stopped: its state is
    checkpointed), B (SIGKILLed with entries fed but not checkpointed: they are pending)
    and C, which restores A's checkpoint and replays B's entries. Every window comes out
    exact: nothing counted twice, nothing lost. (Lateness 1m: the windows stay open while
    workers come and go; an event a minute ahead closes them at the end.)"""
    path = pipelines_file(tmp_path, lateness="1m")
    settings = settings.with_overrides(lease_ms=1000)
    # No checkpoint on a timer: what B fed is still pending when it dies.
    env = {"REALTIME_PIPELINES": path, "REALTIME_CHECKPOINT_MS": "600000"}
    web = processes.web(settings, **env)
    keys = Keys(settings.prefix)
    topics = [f"metrics.k{i}" for i in range(3)]
    rnd = random.Random(9)
    # ts offsets in order, in three chunks; the window [1000, 2000) spans all three.
    timeline = sorted(rnd.sample(range(3000), 600))
    chunks = [timeline[:250], timeline[250:330], timeline[330:]]
    assert chunks[0][-1] >= 1000
    assert chunks[2][0] < 2000
    posted: dict[str, list[tuple[int, float]]] = {t: [] for t in topics}

    async def publish(offsets: list[int]) -> dict[str, str]:
        """Posts the events; returns each topic's last id that is kept."""
        batch = []
        for t in offsets:
            topic, value = rnd.choice(topics), round(rnd.uniform(-5, 100), 2)
            if value >= 0:  # drop_if: never in a window
                posted[topic].append((t, value))
            batch.append({"topic": topic, "ts": T0 + t, "data": {"value": value}})
        ids = await post_events(web.url, batch)
        return {e["topic"]: i for e, i in zip(batch, ids, strict=True) if e["data"]["value"] >= 0}

    async def passed_through(last_ids: dict[str, str]) -> None:
        for topic, last_id in last_ids.items():
            deadline = time.monotonic() + 20
            while [i for i, _ in await history(redis, settings, topic)][-1:] != [last_id]:
                assert time.monotonic() < deadline, processes.logs()
                await asyncio.sleep(0.05)

    async def pending() -> int:
        total = 0
        for p in range(settings.partitions):
            total += (await redis.xpending(keys.ingest(p), settings.group))["pending"]
        return total

    a = processes.worker(settings, **env)
    await passed_through(await publish(chunks[0]))
    assert a.stop() == 0  # a clean stop checkpoints: nothing left pending
    assert await pending() == 0

    b = processes.worker(settings, **env)
    await passed_through(await publish(chunks[1]))
    b.kill()
    assert await pending() > 0  # fed into B's windows, never checkpointed
    checkpointed = [await redis.hget(keys.windows(p), "offset") for p in range(4)]
    assert any(checkpointed)  # A's

    last = await publish(chunks[2])
    flush = [{"topic": t, "ts": T0 + 65_000, "data": {"value": 0}} for t in topics]
    last.update(zip(topics, await post_events(web.url, flush), strict=True))
    processes.worker(settings, **env)  # C: takes over once B's leases expire
    await passed_through(last)
    for topic in topics:
        expected: dict[int, list[float]] = {}
        for t, value in posted[topic]:
            expected.setdefault(t // 1000, []).append(value)
        got = await wait_history(redis, settings, f"{topic}:1s", len(expected))
        assert [i for i, _ in got] == [f"{T0 + 1000 * (w + 1)}-0" for w in sorted(expected)]
        for (_, data), w in zip(got, sorted(expected), strict=True):
            assert {k: data[k] for k in ("count", "sum", "min", "max", "last")} == {
                k: v for k, v in summary(expected[w]).items() if k != "avg"
            }, (topic, w)
        two = await wait_history(redis, settings, f"{topic}:2s", 2)
        assert [d["count"] for _, d in two] == [
            len(expected.get(0, [])) + len(expected.get(1, [])),
            len(expected.get(2, [])),
        ]
