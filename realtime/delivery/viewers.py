"""Viewer counts of topics, read from Redis: the one read that `presence` events, the
ack of `subscribe {presence: true}`, `GET /api/v1/topics/{topic}/presence` and the topic
directory share. Exact across instances: the sum of the live instances' fields of each
topic's presence hash (see `presence.py` for how they are written).

Cost: one round trip for any number of topics: TIME, the instances' heartbeat set
(O(instances)) and one HGETALL per topic (O(instances holding viewers of it)), never
anything per viewer. Liveness is judged by the Redis clock, as the heartbeats are
scored (presence.py), so the instances' clocks need not agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.delivery.presence_counts import parse_fields, total


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
        pipe.time()
        pipe.zrange(keys.presence_instances(), 0, -1, withscores=True)
        for topic in topics:
            pipe.hgetall(keys.presence(topic))
        results = await pipe.execute()
    seconds, micros = results[0]
    now = seconds * 1000 + micros // 1000
    live = {_text(m) for m, expiry in results[1] if expiry > now}
    return {
        topic: total(parse_fields(raw), live, me, local(topic) if local is not None else 0)
        for topic, raw in zip(topics, results[2:], strict=True)
    }


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def viewer_count(redis: Redis, keys: Keys, topic: str) -> int:
    """One topic's viewer count (see `viewer_counts`)."""
    return (await viewer_counts(redis, keys, [topic]))[topic]
