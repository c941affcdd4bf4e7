"""Partition takeover in-process against real Redis: a dead owner's pending entries are
finished first and in order, entries that keep killing workers are dead-lettered, dead
consumers are cleaned up, and partitions are shared out and handed over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from processors.pipelines.plan import Plan
from processors.pipelines.transform import IngestEvent, passthrough
from processors.worker.consumer import Consumer
from processors.worker.groups import ensure_group, remove_dead_consumers
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from realtime.core.wire import UpdateEncoder
from realtime.ingest.api import IngestWriter

pytestmark = pytest.mark.integration


@pytest.fixture
def fanout(settings: Settings) -> UpdateEncoder:
    return UpdateEncoder.of(settings)


async def history_ids(redis: Redis, keys: Keys, topic: str) -> list[str]:
    return [i.decode() for i, _ in await redis.xrange(keys.topic(topic))]


async def consumer_names(redis: Redis, stream: str, group: str) -> set[str]:
    return {c["name"].decode() for c in await redis.xinfo_consumers(stream, group)}


async def wait_for(consumer: Consumer, condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout), consumer.changed:
        await consumer.changed.wait_for(condition)


async def published_ids(pubsub: PubSub, count: int, timeout: float = 10) -> dict[str, list[str]]:
    """Event ids per topic from the fan-out channel, until `count` events arrived."""
    seen: dict[str, list[str]] = {}
    async with asyncio.timeout(timeout):
        while sum(map(len, seen.values())) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                emit = jsoncodec.loads(message["data"])
                seen.setdefault(emit["room"], []).extend(e["id"] for e in emit["data"][0])
    return seen


async def test_a_dead_owners_pending_entries_are_finished_first_in_order(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    keys = Keys(settings.prefix)
    stream = keys.ingest(partition_of("a", settings.partitions))
    await ensure_group(redis, stream, settings.group)
    writer = IngestWriter(redis, settings)
    ids = await writer.append([{"topic": "a", "data": {"n": n}} for n in range(3)])
    # A worker read them and died before committing.
    await redis.xreadgroup(settings.group, "dead-worker#1", {stream: ">"})
    ids += await writer.append([{"topic": "a", "data": {"n": n}} for n in range(3, 5)])
    # Its consumer is kept while it has entries pending.
    assert await remove_dead_consumers(redis, stream, settings.group, set(), 0) == 0

    await asyncio.wait_for(Consumer(redis, fanout, settings).run(asyncio.Event(), burst=True), 20)

    assert await history_ids(redis, keys, "a") == ids
    assert (await redis.xpending(stream, settings.group))["pending"] == 0
    assert "dead-worker#1" in await consumer_names(redis, stream, settings.group)
    await remove_dead_consumers(redis, stream, settings.group, set(), 0)
    assert "dead-worker#1" not in await consumer_names(redis, stream, settings.group)


async def test_an_entry_that_keeps_killing_workers_is_dead_lettered(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    settings = settings.with_overrides(max_attempts=3)
    keys = Keys(settings.prefix)
    stream = keys.ingest(partition_of("a", settings.partitions))
    await ensure_group(redis, stream, settings.group)
    writer = IngestWriter(redis, settings)
    [killer] = await writer.append([{"topic": "a", "data": {"n": 0}}])
    # Three workers took it and died (delivery count 3); the next delivery is the 4th.
    await redis.xreadgroup(settings.group, "dead#1", {stream: ">"})
    for name in ("dead#2", "dead#3"):
        await redis.xclaim(stream, settings.group, name, 0, [killer])
    [survivor] = await writer.append([{"topic": "a", "data": {"n": 1}}])

    await asyncio.wait_for(Consumer(redis, fanout, settings).run(asyncio.Event(), burst=True), 20)

    assert await history_ids(redis, keys, "a") == [survivor]
    [(_, dead)] = await redis.xrange(keys.dead_letters())
    assert dead[b"id"] == killer.encode()
    assert dead[b"attempts"] == b"4"
    assert b"delivered 4 times" in dead[b"error"]


async def test_workers_share_partitions_and_hand_them_over_on_shutdown(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    settings = settings.with_overrides(lease_ms=300, partitions=4)
    keys = Keys(settings.prefix)
    first, second = Consumer(redis, fanout, settings), Consumer(redis, fanout, settings)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(first.run(stop_first)),
        asyncio.create_task(second.run(stop_second)),
    ]
    pubsub = redis.pubsub()
    await pubsub.subscribe(*(keys.topic_channel(f"t{n}") for n in range(20)))
    try:
        await wait_for(second, lambda: len(first.partitions()) == len(second.partitions()) == 2)
        assert set(first.partitions()) | set(second.partitions()) == {0, 1, 2, 3}
        ids = await IngestWriter(redis, settings).append(
            [{"topic": f"t{n}", "data": {"n": n}} for n in range(20)]
        )

        stop_first.set()
        await asyncio.wait_for(tasks[0], 10)
        await wait_for(second, lambda: second.partitions() == [0, 1, 2, 3])
        ids += await IngestWriter(redis, settings).append(
            [{"topic": f"t{n}", "data": {"n": n}} for n in range(20)]
        )
        expected = {f"t{n}": [ids[n], ids[20 + n]] for n in range(20)}
        assert await published_ids(pubsub, 40) == expected
        assert {t: await history_ids(redis, keys, t) for t in expected} == expected
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        stop_first.set()
        stop_second.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert await redis.keys(keys.lease(0)[:-1] + "*") == []  # every lease released


async def test_a_burst_longer_than_the_lease_keeps_its_leases(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    """`realtime process --burst` on work that outlasts a lease period: the first entry's
    transform fails (and is retried in place) for twice the lease."""
    settings = settings.with_overrides(lease_ms=300, max_attempts=1000)
    ids = await IngestWriter(redis, settings).append(
        [{"topic": "a", "data": {"n": n}} for n in range(3)]
    )
    busy_until = time.monotonic() + 0.6

    def slow_to_start(event: IngestEvent, hops: int) -> Plan:
        if time.monotonic() < busy_until:
            raise RuntimeError("not yet")
        return Plan(passthrough(event)[0], [], [], [])

    consumer = Consumer(redis, fanout, settings, planner=slow_to_start)
    await asyncio.wait_for(consumer.run(asyncio.Event(), burst=True), 30)
    assert await history_ids(redis, Keys(settings.prefix), "a") == ids


async def test_a_burst_that_loses_a_lease_takes_it_again_and_leaves_nothing_unread(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    """A stall longer than the lease (a loaded machine) loses the partition mid-burst;
    `--burst` must not exit with its entries unread."""
    settings = settings.with_overrides(lease_ms=300, batch_size=10)
    ids = await IngestWriter(redis, settings).append(
        [{"topic": "a", "data": {"n": n}} for n in range(50)]
    )
    stalled = False

    def stalls_once(event: IngestEvent, hops: int) -> Plan:
        nonlocal stalled
        if event.data == {"n": 20} and not stalled:
            stalled = True
            time.sleep(0.6)  # blocks the loop: no renewal, the lease expires in Redis
        return Plan(passthrough(event)[0], [], [], [])

    consumer = Consumer(redis, fanout, settings, planner=stalls_once)
    await asyncio.wait_for(consumer.run(asyncio.Event(), burst=True), 30)
    assert stalled
    assert await history_ids(redis, Keys(settings.prefix), "a") == ids
