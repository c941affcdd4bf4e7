"""Viewer counts of topics, read from Redis: the one read that `presence` events, the
ack of `subscribe {presence: true}`, `GET /api/v1/topics/{topic}/presence` and the topic
directory share. Exact across instances: the sum of the live instances' fields of each
topic's presence hash (see `presence.py` for how they are written).

Cost: one round trip for any number of topics: the live instances' ids (a script: TIME
and a ZRANGEBYSCORE, O(log n + instances)) and one HGETALL per topic (O(instances
holding viewers of it)), never anything per viewer. Liveness is judged by the Redis
clock, as the heartbeats are scored (presence.py), so the instances' clocks need not
agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.delivery.presence_counts import merge_members, parse_fields, total

MEMBERS_LIMIT = 100  # `sub`s in a member list at most

# The instances whose heartbeat has not expired by the Redis clock (one key: a script
# also runs in a cluster pipeline, where TIME cannot).
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""


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
        pipe.eval(_LIVE, 1, keys.presence_instances())
        for topic in topics:
            pipe.hgetall(keys.presence(topic))
        results = await pipe.execute()
    live = {_text(m) for m in results[0]}
    return {
        topic: total(parse_fields(raw), live, me, local(topic) if local is not None else 0)
        for topic, raw in zip(topics, results[1:], strict=True)
    }


async def viewer_members(
    redis: Redis,
    keys: Keys,
    topic: str,
    *,
    me: str | None = None,
    local: Mapping[str, int] | None = None,
    limit: int = MEMBERS_LIMIT,
) -> tuple[list[str], bool]:
    """Who watches the topic: the token `sub`s of its viewers on all live instances,
    sorted, at most `limit` (True: there are more). Viewers without a `sub` are in the
    count only. Two round trips; O(instances + members)."""
    live = await redis.eval(_LIVE, 1, keys.presence_instances())
    others = sorted({_text(m) for m in live} - {me})
    parts: list[Mapping[str, int]] = [local or {}]
    if others:
        async with redis.pipeline(transaction=False) as pipe:
            for instance in others:
                pipe.hgetall(keys.presence_members(topic, instance))
            parts += [parse_fields(raw) for raw in await pipe.execute()]
    return merge_members(parts, limit)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def viewer_count(redis: Redis, keys: Keys, topic: str) -> int:
    """One topic's viewer count (see `viewer_counts`)."""
    return (await viewer_counts(redis, keys, [topic]))[topic]
