"""The worker in-process against real Redis: history, fan-out, acks, dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from processors.worker.consumer import Consumer
from processors.worker.groups import trim_acknowledged
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from realtime.core.wire import UpdateEncoder
from realtime.ingest.api import IngestWriter

pytestmark = pytest.mark.integration


@pytest.fixture
def consumer(redis: Redis, settings: Settings) -> Consumer:
    return Consumer(redis, UpdateEncoder.of(settings), settings)


async def run_burst(consumer: Consumer) -> None:
    await asyncio.wait_for(consumer.run(asyncio.Event(), burst=True), 20)


async def history(redis: Redis, settings: Settings, topic: str) -> list[tuple[str, dict[str, Any]]]:
    entries = await redis.xrange(Keys(settings.prefix).topic(topic))
    return [
        (i.decode(), {"ts": int(f[b"ts"]), "data": jsoncodec.loads(f[b"data"])}) for i, f in entries
    ]


async def test_events_reach_history_with_their_ingest_ids(
    consumer: Consumer, redis: Redis, settings: Settings
) -> None:
    writer = IngestWriter(redis, settings)
    ids = await writer.append([{"topic": "a", "data": {"n": n}, "ts": 1000 + n} for n in range(5)])
    ids += await writer.append([{"topic": "b", "data": {"n": 9}}])
    await run_burst(consumer)
    assert await history(redis, settings, "a") == [
        (ids[n], {"ts": 1000 + n, "data": {"n": n}}) for n in range(5)
    ]
    assert [i for i, _ in await history(redis, settings, "b")] == [ids[5]]
    for p in range(settings.partitions):
        pending = await redis.xpending(Keys(settings.prefix).ingest(p), settings.group)
        assert pending["pending"] == 0


async def test_a_redelivered_entry_does_not_create_a_second_history_entry(
    consumer: Consumer, redis: Redis, settings: Settings
) -> None:
    writer = IngestWriter(redis, settings)
    ids = await writer.append([{"topic": "a", "data": {"n": n}} for n in range(3)])
    stream = Keys(settings.prefix).ingest(partition_of("a", settings.partitions))
    await run_burst(consumer)
    # Every entry delivered again, as when an operator rewinds the group.
    await redis.xgroup_setid(stream, settings.group, "0")
    await run_burst(consumer)
    assert [i for i, _ in await history(redis, settings, "a")] == ids
    assert (await redis.xpending(stream, settings.group))["pending"] == 0


async def test_a_malformed_entry_is_dead_lettered_and_the_partition_moves_on(
    consumer: Consumer, redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.prefix)
    stream = keys.ingest(partition_of("a", settings.partitions))
    await consumer.ensure_groups()
    await redis.xadd(stream, {"topic": "a", "ts": "1", "data": "{broken"})
    [good_id] = await IngestWriter(redis, settings).append([{"topic": "a", "data": {"ok": True}}])
    await run_burst(consumer)
    [(_, dead)] = await redis.xrange(keys.dead_letters())
    assert dead[b"stream"] == stream.encode()
    assert b"malformed" in dead[b"error"]
    assert dead[b"attempts"] == b"1"  # retrying a malformed entry cannot help
    assert dead[b"entry.data"] == b"{broken"
    assert [i for i, _ in await history(redis, settings, "a")] == [good_id]
    assert (await redis.xpending(stream, settings.group))["pending"] == 0


async def test_each_batch_is_published_once_per_topic_in_order(
    consumer: Consumer, redis: Redis, settings: Settings
) -> None:
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(Keys(settings.prefix).topic_channel("a"))  # the topic's own
    ids = await IngestWriter(redis, settings).append(
        [{"topic": "a", "data": {"n": n}} for n in range(4)]
    )
    await run_burst(consumer)
    message = None
    async with asyncio.timeout(5):
        while message is None:  # the subscribe confirmation reads as None
            message = await pubsub.get_message(timeout=1)
    emit = jsoncodec.loads(message["data"])
    assert emit["method"] == "emit"
    assert emit["event"] == "update"
    assert emit["room"] == "a"
    [events] = emit["data"]
    assert [e["id"] for e in events] == ids
    assert [e["data"]["n"] for e in events] == [0, 1, 2, 3]
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_trim_keeps_only_unacknowledged_entries(
    consumer: Consumer, redis: Redis, settings: Settings
) -> None:
    stream = Keys(settings.prefix).ingest(partition_of("a", settings.partitions))
    writer = IngestWriter(redis, settings)
    await writer.append([{"topic": "a", "data": {"n": n}} for n in range(5)])
    await run_burst(consumer)
    # Two more: delivered to a consumer but not acknowledged (it "crashed").
    late = await writer.append([{"topic": "a", "data": {"n": n}} for n in (5, 6)])
    await redis.xreadgroup(settings.group, "crashed", {stream: ">"})
    await trim_acknowledged(redis, stream, settings.group)
    assert [i.decode() for i, _ in await redis.xrange(stream)] == late
