"""Credential guessing, slowed: failed credentials lock out the client address and the
credential they were tried from and for, in Redis, so every web instance sees the same
state. Not a step of the data path: the doors ask it (the Admin UI and `/metrics` in
`realtime.web`, publish keys in `realtime.ingest.api`).

Each subject (a client address, from `realtime.core.peer`, or a credential: a username,
a presented publish key's hash) has a failure count, forgotten `2 * max_lockout_s` after
its last failure. The first `free` failures cost nothing; each one after that locks the
subject out for 1 s, 2 s, 4 s, ... up to `max_lockout_s`. A locked-out request is refused
before its credential is looked at (429 + `Retry-After`), so a right guess in a lockout
tells nothing, and it is not counted as a failure.

A credential's lockout stops one (admin) username, or one (revoked) publish key, being
tried from many addresses. It applies only to addresses that have failed themselves: the
right credential from a client that never failed is never held up by an attacker
guessing from elsewhere.

Costs: one pipelined read (3 commands) per request that presents a credential, success or
not; one or two pipelined writes per failure. Redis down: throttling fails open (the
request is checked as if nothing were locked; credentials are still checked).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.core.keys import Keys
from realtime.core.settings import Settings

logger = logging.getLogger(__name__)

BASE_LOCKOUT_S = 1.0
WARN_EVERY_S = 10.0  # Redis down: one warning this often, not one per request


@dataclass(frozen=True)
class Policy:
    """How failures turn into lockouts (pure). `free`: 0 turns throttling off."""

    free: int = 5
    max_lockout_s: float = 900.0

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(free=settings.auth_failures, max_lockout_s=settings.auth_lockout_max_s)

    @property
    def enabled(self) -> bool:
        return self.free > 0

    @property
    def window_ms(self) -> int:
        """How long a subject's failures are remembered after its last one."""
        return int(2 * self.max_lockout_s * 1000)

    def lockout_ms(self, failures: int) -> int:
        """The lockout after a subject's `failures`-th failure in a row (0: none)."""
        if failures <= self.free:
            return 0
        doublings = min(failures - self.free - 1, 40)
        return int(min(self.max_lockout_s, BASE_LOCKOUT_S * 2**doublings) * 1000)


def locked_out(wait_s: int) -> str:
    """What a locked-out client is told (with `Retry-After: wait_s` over HTTP)."""
    return f"Too many failed attempts; retry in {wait_s} s."


def refusal_wait_ms(
    address_lockout_ms: int, credential_lockout_ms: int, address_failed: bool
) -> int:
    """How long a request must wait (0: it is checked), from the lockouts' remaining
    milliseconds (Redis PTTL: negative when there is none) and whether its address has
    failures of its own (pure)."""
    wait = max(address_lockout_ms, 0)
    if address_failed:
        wait = max(wait, credential_lockout_ms)
    return wait


class Throttle:
    """The failed-credential throttle of one kind of credential (`admin`, `ingest`)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        kind: str,
        policy: Policy,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.kind = kind
        self.policy = policy
        self.on_refused = on_refused
        self._warned_at = -math.inf

    def _keys(self, address: str, credential: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return (
            self.keys.auth_failures(self.kind, f"address\0{address}"),
            self.keys.auth_failures(self.kind, f"credential\0{credential}"),
        )

    async def wait_s(self, address: str, credential: str) -> int:
        """0 if a request from `address` presenting `credential` may be checked; else the
        whole seconds it must wait (for `Retry-After`). Redis down: 0."""
        if not self.policy.enabled:
            return 0
        (address_failures, address_lockout), (_, credential_lockout) = self._keys(
            address, credential
        )
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.pttl(address_lockout)
                pipe.pttl(credential_lockout)
                pipe.exists(address_failures)
                address_ms, credential_ms, failed = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._redis_down(exc)
            return 0
        wait_ms = refusal_wait_ms(int(address_ms), int(credential_ms), bool(failed))
        if wait_ms <= 0:
            return 0
        if self.on_refused is not None:
            self.on_refused()
        return max(1, math.ceil(wait_ms / 1000))

    async def failed(self, address: str, credential: str) -> None:
        """Count a failed credential against both subjects; lock out those past `free`."""
        if not self.policy.enabled:
            return
        pairs = self._keys(address, credential)
        window = self.policy.window_ms
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for failures, _ in pairs:
                    pipe.incr(failures)
                    pipe.pexpire(failures, window)
                counts = (await pipe.execute())[::2]
            lockouts = [
                (lockout, self.policy.lockout_ms(int(n)))
                for (_, lockout), n in zip(pairs, counts, strict=True)
            ]
            if any(ms for _, ms in lockouts):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for lockout, ms in lockouts:
                        if ms:
                            pipe.set(lockout, 1, px=ms)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            self._redis_down(exc)

    def _redis_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "credential throttle (%s) not applied, Redis unavailable: %s", self.kind, exc
            )
