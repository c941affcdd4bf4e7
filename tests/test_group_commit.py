"""Ingest's group commit against real Redis: concurrent requests share writes, and each
still gets exactly its own ids, in its own order, for entries that hold its events."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from realtime.ingest.api import IngestWriter

pytestmark = pytest.mark.integration


async def test_concurrent_requests_each_get_their_own_ids_for_their_own_events(
    redis: Redis, settings: Settings
) -> None:
    writer = IngestWriter(redis, settings)
    requests = [
        [{"topic": f"t{(r * 7 + i) % 13}", "data": {"r": r, "i": i}} for i in range(r % 5 + 1)]
        for r in range(60)
    ]
    answers = await asyncio.gather(*[writer.append(events) for events in requests])
    keys = Keys(settings.prefix)
    for events, ids in zip(requests, answers, strict=True):
        assert len(ids) == len(events)
        for event, entry_id in zip(events, ids, strict=True):
            stream = keys.ingest(partition_of(event["topic"], settings.partitions))
            [(_, fields)] = await redis.xrange(stream, entry_id, entry_id)
            assert fields[b"topic"] == event["topic"].encode()
            assert json.loads(fields[b"data"]) == event["data"]
    stored = sum([await redis.xlen(keys.ingest(p)) for p in range(settings.partitions)])
    assert stored == sum(len(events) for events in requests)


async def test_a_request_waiting_behind_a_write_is_written_next(
    redis: Redis, settings: Settings
) -> None:
    """The second request arrives while the first is in flight; both are stored, the
    first's entry before the second's in their shared stream."""
    writer = IngestWriter(redis, settings)
    first = asyncio.ensure_future(writer.append([{"topic": "same", "data": {"n": 1}}]))
    await asyncio.sleep(0)  # the first is now being written
    [second_id] = await writer.append([{"topic": "same", "data": {"n": 2}}])
    [first_id] = await first
    stream = Keys(settings.prefix).ingest(partition_of("same", settings.partitions))
    assert [i.decode() for i, _ in await redis.xrange(stream)] == [first_id, second_id]


async def test_when_redis_is_gone_every_waiting_request_fails_and_the_next_one_works(
    settings: Settings,
) -> None:
    client = connect(settings)
    writer = IngestWriter(client, settings)
    await writer.append([{"topic": "a", "data": {}}])
    await client.connection_pool.disconnect()  # a dead connection: retried once, works
    assert len(await writer.append([{"topic": "a", "data": {}}])) == 1
    await client.aclose()
    bad = connect(settings.with_overrides(redis_url="redis://127.0.0.1:1/0"))
    failing = IngestWriter(bad, settings)
    results = await asyncio.gather(
        *[failing.append([{"topic": "a", "data": {"n": n}}]) for n in range(5)],
        return_exceptions=True,
    )
    assert all(isinstance(r, RedisError) for r in results), results
    await bad.aclose()
