"""The worker's liveness heartbeat, and `realtime process --check` that reads it.

Every coordination round (`lease_ms / 3`) the worker sets `rt:heartbeat:{consumer}` to
its owner token with a TTL of `STALE_LEASES` lease periods: the key exists exactly while
the worker's main loop keeps coming round. A process that is alive but stuck (a hung
loop, a blocked event loop) lets it expire, which the process table cannot show.

`--check` (a Kubernetes exec liveness probe) exits 1 when the key is gone. When it cannot
reach Redis it exits 0: a Redis outage is not the worker's fault, and restarting every
worker for it would only add a thundering herd when Redis returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.settings import Settings

# The heartbeat lives this many lease periods: a worker is stale after missing about
# nine coordination rounds (15 s with the default lease).
STALE_LEASES = 3
CHECK_TIMEOUT_S = 3.0

_CLEAR = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def stale_after_ms(settings: Settings) -> int:
    return STALE_LEASES * settings.lease_ms


class Heartbeat:
    """The heartbeat key of one worker process (`owner`: its token for this start)."""

    def __init__(self, redis: Redis, keys: Keys, consumer: str, owner: str, ttl_ms: int) -> None:
        self.redis = redis
        self.key = keys.heartbeat(consumer)
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._clear = redis.register_script(_CLEAR)

    async def beat(self) -> None:
        await self.redis.set(self.key, self.owner, px=self.ttl_ms)

    async def clear(self) -> None:
        """On a clean exit; a successor with the same name may already be beating."""
        await self._clear(keys=[self.key], args=[self.owner])


@dataclass(frozen=True)
class CheckResult:
    status: int  # the exit status: 0 alive (or cannot tell), 1 stale
    message: str


async def check(settings: Settings, consumer: str) -> CheckResult:
    key = Keys.of(settings).heartbeat(consumer)
    stale_s = stale_after_ms(settings) / 1000
    timeout = min(settings.redis_timeout_s, CHECK_TIMEOUT_S)
    redis = connect(settings.with_overrides(redis_timeout_s=timeout))
    try:
        async with asyncio.timeout(timeout):
            ttl_ms = await redis.pttl(key)
    except (RedisError, OSError, TimeoutError) as exc:
        return CheckResult(0, f"cannot reach Redis ({exc}); not judging worker {consumer}")
    finally:
        await redis.aclose()
    if ttl_ms < 0:
        return CheckResult(1, f"worker {consumer}: no heartbeat for {stale_s:g}s (stale)")
    age_s = max(stale_after_ms(settings) - ttl_ms, 0) / 1000
    return CheckResult(0, f"worker {consumer}: heartbeat {age_s:.1f}s ago")
