"""Partition leases: at most one worker owns an ingest partition at a time.

A lease is the key `rt:lease:{p}` holding a token, created with SET NX PX. The token is
the owner's name plus a number that is new with every acquisition, so it also tells two
holdings by the same worker apart (a fencing token). The owner renews the lease well
before it expires and deletes it on a clean shutdown; renew and release compare the
token first (Lua), so a worker never extends or drops a lease that someone else holds
by now. When a worker dies, its leases expire and others take its partitions over.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from realtime.core.keys import Keys

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# A held lease is trusted locally for this fraction of its TTL after the renewal was
# sent, leaving room for clock-rate differences and the renewal's own transit time.
LOCAL_VALIDITY = 0.8


@dataclass
class Lease:
    partition: int
    token: str
    valid_until: float  # time.monotonic(); past it, stop using the partition

    def expired(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.valid_until


class Leases:
    """Acquire, renew and release the partition leases of one owner."""

    def __init__(self, redis: Redis, keys: Keys, owner: str, lease_ms: int) -> None:
        self.redis = redis
        self.keys = keys
        self.owner = owner
        self.lease_ms = lease_ms
        self._acquisitions = itertools.count(1)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def _valid_until(self, sent_at: float) -> float:
        return sent_at + self.lease_ms * LOCAL_VALIDITY / 1000

    async def acquire(self, partition: int) -> Lease | None:
        """The lease if it was free; None if someone holds it."""
        token = f"{self.owner}/{next(self._acquisitions)}"
        sent_at = time.monotonic()
        ok = await self.redis.set(self.keys.lease(partition), token, nx=True, px=self.lease_ms)
        return Lease(partition, token, self._valid_until(sent_at)) if ok else None

    async def renew(self, leases: Iterable[Lease]) -> list[Lease]:
        """Extend each lease still ours (one round trip); returns the ones we lost."""
        leases = list(leases)
        if not leases:
            return []
        sent_at = time.monotonic()
        if self.keys.cluster:
            # redis-py's cluster pipeline refuses scripts: one call per lease, at once.
            results = await asyncio.gather(
                *[
                    self._renew(
                        keys=[self.keys.lease(lease.partition)], args=[lease.token, self.lease_ms]
                    )
                    for lease in leases
                ]
            )
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for lease in leases:
                    await self._renew(
                        keys=[self.keys.lease(lease.partition)],
                        args=[lease.token, self.lease_ms],
                        client=pipe,
                    )
                results = await pipe.execute()
        lost = []
        for lease, renewed in zip(leases, results, strict=True):
            if renewed:
                lease.valid_until = self._valid_until(sent_at)
            else:
                lost.append(lease)
        return lost

    async def release(self, lease: Lease) -> bool:
        """Give the partition up at once (clean shutdown or rebalancing)."""
        released = await self._release(keys=[self.keys.lease(lease.partition)], args=[lease.token])
        return bool(released)

    async def holder(self, partition: int) -> str | None:
        value = await self.redis.get(self.keys.lease(partition))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
