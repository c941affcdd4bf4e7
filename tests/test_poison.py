"""Poison entries in-process against real Redis: retried in place, dead-lettered after
`max_attempts`, and the partition moves on in order."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis.asyncio import Redis

from processors.pipelines.plan import Plan
from processors.pipelines.transform import IngestEvent, passthrough
from processors.worker.consumer import Consumer
from processors.worker.fencing import CommitFailure, CommitPlan, FencedPartition, HistoryWrite
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.metrics import WorkerMetrics
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from realtime.core.wire import UpdateEncoder
from realtime.ingest.api import IngestWriter
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def fanout(settings: Settings) -> UpdateEncoder:
    return UpdateEncoder.of(settings)


def neighbour(topic: str, partitions: int, prefix: str = "n") -> str:
    """Another topic in the same partition as `topic`."""
    return next(
        f"{prefix}{i}"
        for i in range(1000)
        if partition_of(f"{prefix}{i}", partitions) == partition_of(topic, partitions)
    )


async def history_ids(redis: Redis, keys: Keys, topic: str) -> list[str]:
    return [i.decode() for i, _ in await redis.xrange(keys.topic(topic))]


async def drain(redis: Redis, fanout: UpdateEncoder, settings: Settings, **kwargs: object) -> None:
    consumer = Consumer(redis, fanout, settings, **kwargs)  # type: ignore[arg-type]
    await asyncio.wait_for(consumer.run(asyncio.Event(), burst=True), 20)


async def test_an_entry_whose_history_write_always_fails_is_dead_lettered(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    settings = settings.with_overrides(max_attempts=2)
    keys = Keys(settings.prefix)
    other = neighbour("poison", settings.partitions)
    await redis.set(keys.topic("poison"), "not a stream")  # every XADD to it fails
    writer = IngestWriter(redis, settings)
    before, poison, after = await writer.append(
        [
            {"topic": other, "data": {"n": 1}},
            {"topic": "poison", "data": {"n": 2}},
            {"topic": other, "data": {"n": 3}},
        ]
    )
    await drain(redis, fanout, settings)

    assert await history_ids(redis, keys, other) == [before, after]
    [(_, dead)] = await redis.xrange(keys.dead_letters())
    assert dead[b"id"] == poison.encode()
    assert dead[b"attempts"] == b"2"
    assert b"WRONGTYPE" in dead[b"error"]
    assert dead[b"entry.topic"] == b"poison"
    stream = keys.ingest(partition_of("poison", settings.partitions))
    assert (await redis.xpending(stream, settings.group))["pending"] == 0


async def test_a_transform_that_keeps_failing_is_retried_then_dead_lettered(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    settings = settings.with_overrides(max_attempts=3)
    keys = Keys(settings.prefix)
    calls: list[int] = []

    def fragile(event: IngestEvent, hops: int) -> Plan:
        if event.data.get("boom"):
            calls.append(1)
            raise ValueError("boom")
        return Plan(passthrough(event)[0], [], [], [])

    ok1, _, ok2 = await IngestWriter(redis, settings).append(
        [
            {"topic": "a", "data": {}},
            {"topic": "a", "data": {"boom": True}},
            {"topic": "a", "data": {}},
        ]
    )
    await drain(redis, fanout, settings, planner=fragile)

    assert len(calls) == 3
    assert await history_ids(redis, keys, "a") == [ok1, ok2]
    [(_, dead)] = await redis.xrange(keys.dead_letters())
    assert dead[b"attempts"] == b"3"
    assert b"ValueError: boom" in dead[b"error"]


async def test_a_failure_that_clears_is_not_dead_lettered(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    keys = Keys(settings.prefix)
    failures = [ValueError("transient")]

    def flaky(event: IngestEvent, hops: int) -> Plan:
        if failures:
            raise failures.pop()
        return Plan(passthrough(event)[0], [], [], [])

    ids = await IngestWriter(redis, settings).append(
        [{"topic": "a", "data": {"n": n}} for n in range(3)]
    )
    await drain(redis, fanout, settings, planner=flaky)

    assert await history_ids(redis, keys, "a") == ids
    assert await redis.xlen(keys.dead_letters()) == 0


async def test_a_poison_entry_among_windowed_ones_leaves_the_windows_exact(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    """Its failed commits had fed the windows already: each failure restores the
    checkpoint and replays; the entries around it are counted once, and they are not
    dead-lettered for being replayed (their delivery count stays)."""
    settings = settings.with_overrides(max_attempts=2)
    keys = Keys(settings.prefix)
    poison = next(
        f"metrics.p{i}"
        for i in range(1000)
        if partition_of(f"metrics.p{i}", 4) == partition_of("metrics.ok", 4)
    )
    await redis.set(keys.topic(poison), "not a stream")
    t0 = 1_700_000_000_000
    events = [{"topic": "metrics.ok", "ts": t0 + n, "data": {"value": n}} for n in range(5)]
    events.insert(2, {"topic": poison, "ts": t0, "data": {"value": 100}})
    # Moves the watermark (lateness 1s) past the first window: it closes.
    events.append({"topic": "metrics.ok", "ts": t0 + 3000, "data": {"value": 50}})
    await IngestWriter(redis, settings).append(events)
    await drain(redis, fanout, settings)

    [(_, dead)] = await redis.xrange(keys.dead_letters(partition_of(poison, 4)))
    assert dead[b"entry.topic"] == poison.encode()
    assert len(await history_ids(redis, keys, "metrics.ok")) == 6
    [(window_id, fields)] = await redis.xrange(keys.topic("metrics.ok:1s"))
    assert window_id.decode() == f"{t0 + 1000}-0"
    window = jsoncodec.loads(fields[b"data"])
    assert (window["count"], window["sum"]) == (5, 10.0)


async def test_a_window_output_whose_history_key_has_the_wrong_type_is_dead_lettered(
    redis: Redis, settings: Settings, fanout: UpdateEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    """The timer closes the windows of idle topics; one output topic's history key holds
    a string. Each of its outputs goes to the dead-letter stream once, with the key and
    the error; the other windows and later events are written, the partition keeps up."""
    keys = Keys(settings.prefix)
    bad, bad_key = "metrics.bad", keys.topic("metrics.bad:1s")
    good = neighbour(bad, settings.partitions, prefix="metrics.ok")
    partition = partition_of(bad, settings.partitions)
    await redis.set(bad_key, "not a stream")
    metrics = WorkerMetrics()
    consumer = Consumer(redis, fanout, settings, metrics=metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    writer = IngestWriter(redis, settings)
    # 500 ms before a minute boundary: the 1s, 10s and 1m windows all end at it, so the
    # timer closes them together, about 1.5 s (the end, plus lateness) after ingest.
    now = int(time.time() * 1000)
    ts = now - now % 60_000 - 500
    outputs = [f"{good}:1s", f"{good}:10s", f"{good}:1m", f"{bad}:10s", f"{bad}:1m"]

    async def written(count: int) -> bool:
        lengths = [await redis.xlen(keys.topic(topic)) for topic in outputs]
        dead = await redis.xlen(keys.dead_letters())
        if lengths != [count] * len(outputs) or dead != count:
            return False
        # Only now: the consumer group exists once the outputs are written (NOGROUP before).
        pending = await redis.xpending(keys.ingest(partition), settings.group)
        return not pending["pending"]

    try:
        first = await writer.append(
            [
                {"topic": bad, "ts": ts, "data": {"value": 1}},
                {"topic": good, "ts": ts, "data": {"value": 2}},
            ]
        )
        await eventually(lambda: written(1), "the first dead letter", timeout=15)
        later = await writer.append(
            [
                {"topic": bad, "ts": ts + 60_000, "data": {"value": 3}},
                {"topic": good, "ts": ts + 60_000, "data": {"value": 4}},
            ]
        )
        await eventually(lambda: written(2), "the second dead letter", timeout=15)
        await asyncio.sleep(1)  # nothing is retried in the background
        assert await written(2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)

    assert await history_ids(redis, keys, bad) == [first[0], later[0]]
    assert await history_ids(redis, keys, good) == [first[1], later[1]]
    letters = [fields for _, fields in await redis.xrange(keys.dead_letters())]
    assert [dead[b"id"] for dead in letters] == [
        f"{ts + 500}-0".encode(),
        f"{ts + 60_500}-0".encode(),
    ]
    for dead, value in zip(letters, [1.0, 3.0], strict=True):
        assert dead[b"stream"] == keys.ingest(partition).encode()
        assert dead[b"error"].decode() == (
            f"window output {dead[b'id'].decode()}: cannot write history key {bad_key}: "
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        )
        assert dead[b"attempts"] == b"1"
        assert dead[b"entry.topic"] == f"{bad}:1s".encode()
        assert jsoncodec.loads(dead[b"entry.data"])["sum"] == value
    assert metrics.dead_letters._value.get() == 2
    assert await redis.get(bad_key) == b"not a stream"
    logged = [r for r in caplog.records if bad_key in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.ERROR, logging.ERROR]


async def test_a_window_output_closed_by_an_event_is_dead_lettered_not_the_event(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    """The event that closes the window is not to blame for its output's history key:
    it is written, and the output is dead-lettered in its place."""
    keys = Keys(settings.prefix)
    await redis.set(keys.topic("metrics.bad:1s"), "not a stream")
    t0 = 1_700_000_000_000
    ids = await IngestWriter(redis, settings).append(
        [
            {"topic": "metrics.bad", "ts": t0, "data": {"value": 1}},
            # Moves the watermark (lateness 1s) past the first 1s window: it closes.
            {"topic": "metrics.bad", "ts": t0 + 3000, "data": {"value": 2}},
            {"topic": "metrics.bad", "ts": t0 + 3001, "data": {"value": 3}},
        ]
    )
    await drain(redis, fanout, settings)

    assert await history_ids(redis, keys, "metrics.bad") == ids
    [(_, dead)] = await redis.xrange(keys.dead_letters())
    assert dead[b"id"] == f"{t0 + 1000}-0".encode()
    assert dead[b"entry.topic"] == b"metrics.bad:1s"
    assert b"WRONGTYPE" in dead[b"error"]
    stream = keys.ingest(partition_of("metrics.bad", settings.partitions))
    assert (await redis.xpending(stream, settings.group))["pending"] == 0


async def test_on_a_cluster_a_wrong_type_history_key_in_another_slot_is_reported_by_index(
    redis: Redis, settings: Settings
) -> None:
    """A window output whose topic hashes to another partition is written outside the
    fenced commit (processors/worker/slots.py): its WRONGTYPE is reported like one in the
    commit, by its index in the plan, and nothing is acknowledged. (A single Redis runs
    the cluster-mode scripts alike: it does not check hash slots.)"""
    keys = Keys(settings.prefix, cluster=True, partitions=settings.partitions)
    own = "metrics.a"
    partition = partition_of(own, settings.partitions)
    output = next(
        f"metrics.a{n}:1s"
        for n in range(99)
        if partition_of(f"metrics.a{n}:1s", settings.partitions) != partition
    )
    await redis.set(keys.lease(partition), "token")
    await redis.set(keys.topic(output), "not a stream")
    await redis.xadd(keys.ingest(partition), {"topic": own})
    await redis.xgroup_create(keys.ingest(partition), settings.group, id="0")
    fenced = FencedPartition(
        redis, keys, partition, token="token", group=settings.group, consumer="c",
        history_maxlen=100,
    )  # fmt: skip
    [entry] = (await fenced.read(10)).entries
    plan = CommitPlan(
        history=[
            HistoryWrite(keys.topic(own), "1-0", ["ts", "1"]),
            HistoryWrite(keys.topic(output), "1000-0", ["ts", "0"]),
        ],
        acks=[entry.id],
    )
    failure = await fenced.commit(plan)

    wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert failure == CommitFailure(1, wrongtype)
    assert (await redis.xpending(keys.ingest(partition), settings.group))["pending"] == 1
