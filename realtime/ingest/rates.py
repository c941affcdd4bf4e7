"""Rate limits. `TokenBucket` is pure (one per connection, for subscribe/unsubscribe);
`IngestRate` counts each publish key's events per second in Redis, so the limit holds
across every web instance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from redis.asyncio import Redis

from realtime.core.keys import Keys


class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up; each request takes one."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self.tokens = capacity
        self.at = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


WINDOW_MS = 1000

# A fixed one-second window per key. KEYS[1]: the counter. ARGV: events, limit, window ms.
# Returns 0 (counted) or the ms until the window ends (refused, nothing counted). A
# request is counted whole or not at all; one larger than the limit passes only into an
# empty window, so a big batch is slow, never impossible.
_TAKE = """
local n, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 and used + n > limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]); ttl = tonumber(ARGV[3]) end
  return ttl
end
redis.call('INCRBY', KEYS[1], n)
if used == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 0
"""


class IngestRate:
    def __init__(self, redis: Redis, keys: Keys, events_per_s: int) -> None:
        self.keys = keys
        self.limit = events_per_s
        self._take = redis.register_script(_TAKE)

    async def retry_after_s(self, key_name: str, events: int) -> int:
        """0 if `events` more fit into this second for the key, else the whole seconds
        to wait (for Retry-After). Raises RedisError like any Redis call."""
        if self.limit <= 0:
            return 0
        wait_ms = int(
            await self._take(
                keys=[self.keys.ingest_rate(key_name)], args=[events, self.limit, WINDOW_MS]
            )
        )
        return 0 if wait_ms <= 0 else max(1, math.ceil(wait_ms / 1000))
