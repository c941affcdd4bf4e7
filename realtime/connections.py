"""Redis connections for the streams side (ingest, history, worker), built from settings."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from realtime.settings import Settings


def redis_options(settings: Settings, *, blocking_ms: int = 0, retries: int = 1) -> dict[str, Any]:
    """Client options: fail fast when Redis is gone, retry once on a fresh connection.

    The single retry covers the common case of a pooled connection that died when Redis
    restarted; anything longer is the caller's decision (503 on ingest, backoff in loops).
    A command that is not safe to send twice (a consumer-group read whose reply was lost
    would strand the entries it handed out) needs `retries=0`.
    A blocking read (XREAD BLOCK) gets its block time added to the read timeout.
    """
    return {
        "socket_connect_timeout": settings.redis_timeout_s,
        "socket_timeout": settings.redis_timeout_s + blocking_ms / 1000,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), retries),
        # RESP2 replies have the same shape in every redis-py version we support.
        "protocol": 2,
    }


def connect(settings: Settings, *, blocking_ms: int = 0, retries: int = 1) -> Redis:
    """A client (with its own pool) for `settings.redis_url`; no I/O until first use."""
    client: Redis = Redis.from_url(
        settings.redis_url, **redis_options(settings, blocking_ms=blocking_ms, retries=retries)
    )
    return client
