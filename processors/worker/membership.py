"""Worker membership: who is alive, and how many partitions each worker should own.

Every worker heartbeats its owner token into the sorted set `rt:workers`, scored by the
moment (Redis clock, ms) the heartbeat expires; a worker that stops heartbeating drops
out after one lease period. The live tokens, sorted, give each worker a rank, and the
partitions are shared out by rank so that the shares add up to the partition count.
"""

from __future__ import annotations

from redis.asyncio import Redis

from realtime.core.keys import Keys

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def fair_share(owner: str, alive: list[str], partitions: int) -> int:
    """How many partitions `owner` should hold, given the live workers (pure).

    With P partitions and N workers, the first P mod N workers by token order hold
    P // N + 1 and the rest P // N, so every partition has a place and nobody idles
    while another holds two more than it.
    """
    members = sorted(set(alive) | {owner})
    base, extra = divmod(partitions, len(members))
    return base + (1 if members.index(owner) < extra else 0)


class Membership:
    def __init__(self, redis: Redis, keys: Keys, owner: str, ttl_ms: int) -> None:
        self.redis = redis
        self.key = keys.workers()
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._heartbeat = redis.register_script(_HEARTBEAT)

    async def heartbeat(self) -> list[str]:
        """Announce ourselves for another `ttl_ms`; returns the live owner tokens."""
        members = await self._heartbeat(keys=[self.key], args=[self.owner, self.ttl_ms])
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def leave(self) -> None:
        await self.redis.zrem(self.key, self.owner)
