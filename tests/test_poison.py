"""Poison entries in-process against real Redis: retried in place, dead-lettered after
`max_attempts`, and the partition moves on in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from processors.consumer import Consumer
from processors.pipelines import Plan
from processors.transform import IngestEvent, passthrough
from realtime import jsoncodec
from realtime.fanout import FanoutManager
from realtime.ingest import IngestWriter
from realtime.keys import Keys
from realtime.settings import Settings
from realtime.topics import partition_of


@pytest.fixture
async def fanout(settings: Settings) -> AsyncIterator[FanoutManager]:
    manager = FanoutManager(settings, write_only=True)
    yield manager
    await manager.aclose()


def neighbour(topic: str, partitions: int) -> str:
    """Another topic in the same partition as `topic`."""
    return next(
        f"n{i}"
        for i in range(1000)
        if partition_of(f"n{i}", partitions) == partition_of(topic, partitions)
    )


async def history_ids(redis: Redis, keys: Keys, topic: str) -> list[str]:
    return [i.decode() for i, _ in await redis.xrange(keys.topic(topic))]


async def drain(redis: Redis, fanout: FanoutManager, settings: Settings, **kwargs: object) -> None:
    consumer = Consumer(redis, fanout, settings, **kwargs)  # type: ignore[arg-type]
    await asyncio.wait_for(consumer.run(asyncio.Event(), burst=True), 20)


async def test_an_entry_whose_history_write_always_fails_is_dead_lettered(
    redis: Redis, settings: Settings, fanout: FanoutManager
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
    redis: Redis, settings: Settings, fanout: FanoutManager
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
    redis: Redis, settings: Settings, fanout: FanoutManager
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
    redis: Redis, settings: Settings, fanout: FanoutManager
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
