"""Viewer counts of topics, read from Redis: the one read that `presence` events, the
ack of `subscribe {presence: true}`, `GET /api/v1/topics/{topic}/presence` and the topic
directory share. Exact across instances: the sum of the live instances' fields of each
topic's presence hash (see `presence.py` for how they are written).

Cost: one round trip for any number of topics: a ZRANGEBYSCORE of the live instances
(O(log n + instances)) and one HGETALL per topic (O(instances holding viewers of it)),
never anything per viewer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.delivery.presence_counts import parse_fields, total


def now_ms() -> int:
    return int(time.time() * 1000)


async def viewer_counts(
    redis: Redis,
    keys: Keys,
    topics: Sequence[str],
    *,
    me: str | None = None,
    local: Callable[[str], int] | None = None,
) -> dict[str, int]:
    """The viewer count of each topic, across all live web instances; raises RedisError
    or OSError when Redis cannot answer. A web instance passes its own id (`me`) and
    its exact local counts (`local`), which replace what it last wrote."""
    if not topics:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(keys.presence_instances(), now_ms(), "+inf")
        for topic in topics:
            pipe.hgetall(keys.presence(topic))
        results = await pipe.execute()
    live = {m.decode() if isinstance(m, bytes) else str(m) for m in results[0]}
    return {
        topic: total(parse_fields(raw), live, me, local(topic) if local is not None else 0)
        for topic, raw in zip(topics, results[1:], strict=True)
    }


async def viewer_count(redis: Redis, keys: Keys, topic: str) -> int:
    """One topic's viewer count (see `viewer_counts`)."""
    return (await viewer_counts(redis, keys, [topic]))[topic]
