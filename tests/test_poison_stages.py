"""Promise 8 against poison entries of several kinds, in-process against real Redis: a
failure at any stage of the worker (planning, encoding, committing), or one that
crashes the whole partition runner, ends with the entry processed or dead-lettered
with its error after a bounded number of tries; the innocent entries around it are
written, in order, and the other partitions keep flowing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest
from redis.asyncio import Redis

from processors.worker.consumer import Consumer
from processors.worker.fencing import Entry
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from realtime.core.wire import UpdateEncoder
from realtime.ingest.api import IngestWriter

pytestmark = pytest.mark.integration


class Crash(BaseException):
    """Not an Exception: nothing in the runner catches it, so the runner task dies."""


@pytest.fixture
def fanout(settings: Settings) -> UpdateEncoder:
    return UpdateEncoder.of(settings)


def is_poison(entry: Entry) -> bool:
    data = entry.fields.get(b"data", entry.fields.get("data", b""))
    return b'"poison"' in (data if isinstance(data, bytes) else data.encode())


def other_partition_topic(topic: str, partitions: int) -> str:
    return next(
        f"o{i}"
        for i in range(1000)
        if partition_of(f"o{i}", partitions) != partition_of(topic, partitions)
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def history_ids(redis: Redis, keys: Keys, topic: str) -> list[str]:
    return [i.decode() for i, _ in await redis.xrange(keys.topic(topic))]


def nested(depth: int) -> dict[str, object]:
    """`depth` levels of objects (the outer one is level 1)."""
    data: dict[str, object] = {}
    for _ in range(depth - 1):
        data = {"x": data}
    return data


async def run_until_dead_lettered(
    redis: Redis,
    fanout: UpdateEncoder,
    settings: Settings,
    entries: list[dict[str, bytes | str]],
    *,
    fault: Callable[[str, Sequence[Entry]], None] | None = None,
) -> list[str]:
    """Append `entries` raw to their partitions' ingest streams (as a replayed dead
    letter or an older web would), run a live worker until the dead-letter stream has
    one record and nothing is pending; returns the entry ids."""
    keys = Keys(settings.prefix)
    ids = [
        (
            await redis.xadd(
                keys.ingest(partition_of(str(fields["topic"]), settings.partitions)),
                fields,  # type: ignore[arg-type]
            )
        ).decode()
        for fields in entries
    ]
    consumer = Consumer(redis, fanout, settings, fault=fault)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))

    async def settled() -> bool:
        if await redis.xlen(keys.dead_letters()) < 1:
            return False
        pending = [
            (await redis.xpending(keys.ingest(p), settings.group))["pending"]
            for p in range(settings.partitions)
        ]
        return not any(pending)

    try:
        await eventually(settled)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return ids


def raw(topic: str, data: object) -> dict[str, bytes | str]:
    return {"topic": topic, "ts": "1", "data": jsoncodec.dumpb(data)}


async def test_data_the_worker_cannot_encode_is_dead_lettered_and_its_neighbours_written(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    """V1: 252 levels got a 202 (before ingest refused them); the wrapper made it 256 for
    the encoder, which crashed the partition runner every time, forever."""
    settings = settings.with_overrides(max_attempts=3)
    keys = Keys(settings.prefix)
    other = other_partition_topic("a", settings.partitions)
    entries = [raw("a", {"n": 1}), raw("a", nested(252)), raw("a", {"n": 3}), raw(other, {})]
    ids = await run_until_dead_lettered(redis, fanout, settings, entries)

    assert await history_ids(redis, keys, "a") == [ids[0], ids[2]]
    assert await history_ids(redis, keys, other) == [ids[3]]
    [(_, dead)] = await redis.xrange(keys.dead_letters())
    assert dead[b"id"] == ids[1].encode()
    assert b"Recursion limit" in dead[b"error"]
    assert int(dead[b"attempts"]) <= 3 + 1
    assert await redis.exists(keys.attempts(partition_of("a", settings.partitions))) == 0


@pytest.mark.parametrize("stage", ["process", "encode", "commit"])
@pytest.mark.parametrize("kind", [RuntimeError, Crash])
async def test_a_fault_at_any_stage_dead_letters_only_the_poison(
    redis: Redis,
    settings: Settings,
    fanout: UpdateEncoder,
    stage: str,
    kind: type[BaseException],
) -> None:
    settings = settings.with_overrides(max_attempts=3)
    keys = Keys(settings.prefix)
    other = other_partition_topic("a", settings.partitions)
    faults: list[str] = []

    def fault(where: str, entries: Sequence[Entry]) -> None:
        if where == stage and any(is_poison(e) for e in entries):
            faults.append(where)
            raise kind(f"injected at {where}")

    entries = [raw("a", {"n": n}) for n in range(5)]
    entries.insert(2, raw("a", {"k": "poison"}))
    entries.append(raw(other, {"n": 9}))
    ids = await run_until_dead_lettered(redis, fanout, settings, entries, fault=fault)

    assert await history_ids(redis, keys, "a") == ids[:2] + ids[3:6]
    assert await history_ids(redis, keys, other) == [ids[6]]
    [(_, dead)] = await redis.xrange(keys.dead_letters())
    assert dead[b"id"] == ids[2].encode()
    assert f"injected at {stage}".encode() in dead[b"error"]
    # Bounded: the first try, then at most max_attempts more (one of them in a batch).
    assert 1 <= len(faults) <= 3 + 2
    assert await redis.exists(keys.attempts(partition_of("a", settings.partitions))) == 0


async def test_other_partitions_flow_while_a_poison_entry_is_retried(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    settings = settings.with_overrides(max_attempts=1000)
    keys = Keys(settings.prefix)
    other = other_partition_topic("a", settings.partitions)
    failed = asyncio.Event()

    def fault(where: str, entries: Sequence[Entry]) -> None:
        if where == "encode" and any(is_poison(e) for e in entries):
            failed.set()
            raise Crash("injected")

    stream = keys.ingest(partition_of("a", settings.partitions))
    await redis.xadd(stream, raw("a", {"k": "poison"}))  # type: ignore[arg-type]
    consumer = Consumer(redis, fanout, settings, fault=fault)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(failed.wait(), 30)
        ids = await IngestWriter(redis, settings).append(
            [{"topic": other, "data": {"n": n}} for n in range(20)]
        )

        async def written() -> bool:
            return await history_ids(redis, keys, other) == ids

        await eventually(written)
        assert await history_ids(redis, keys, "a") == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_burst_worker_dead_letters_an_entry_that_crashes_its_runner(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    """`realtime process --burst` took a crashed runner's partition as finished and
    returned with the entry pending; now it retries it until it is dead-lettered."""
    settings = settings.with_overrides(max_attempts=2)
    keys = Keys(settings.prefix)

    def fault(where: str, entries: Sequence[Entry]) -> None:
        if where == "encode" and any(is_poison(e) for e in entries):
            raise Crash("injected")

    stream = keys.ingest(partition_of("a", settings.partitions))
    ids = [
        (await redis.xadd(stream, raw("a", data))).decode()  # type: ignore[arg-type]
        for data in ({"n": 1}, {"k": "poison"}, {"n": 3})
    ]
    consumer = Consumer(redis, fanout, settings, fault=fault)
    await asyncio.wait_for(consumer.run(asyncio.Event(), burst=True), 60)

    assert await history_ids(redis, keys, "a") == [ids[0], ids[2]]
    [(_, dead)] = await redis.xrange(keys.dead_letters())
    assert dead[b"id"] == ids[1].encode()
    assert (await redis.xpending(stream, settings.group))["pending"] == 0
