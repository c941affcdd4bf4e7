"""Redis connections for the streams side (ingest, history, worker), built from settings.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.core.redisurl import SentinelTarget, is_sentinel, parse_sentinel_url, scheme_of
from realtime.core.settings import Settings


def redis_options(settings: Settings, *, blocking_ms: int = 0, retries: int = 1) -> dict[str, Any]:
    """Client options: fail fast when Redis is gone, retry once on a fresh connection.

    The single retry covers the common case of a pooled connection that died when Redis
    restarted (or failed over); anything longer is the caller's decision (503 on ingest,
    backoff in loops).
    A command that is not safe to send twice (a consumer-group read whose reply was lost
    would strand the entries it handed out) needs `retries=0`.
    A blocking read (XREAD BLOCK) gets its block time added to the read timeout.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_timeout_s,
        "socket_timeout": settings.redis_timeout_s + blocking_ms / 1000,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), retries),
        # RESP2 replies have the same shape in every redis-py version we support.
        "protocol": 2,
    }
    if scheme_of(settings.redis_url) != "unix":  # a local socket has no TCP keepalive
        options["socket_keepalive"] = True
    if scheme_of(settings.redis_url) == "rediss" and not settings.redis_tls_verify:
        options["ssl_cert_reqs"] = "none"
        options["ssl_check_hostname"] = False
    return options


class SentinelConnection(SentinelManagedConnection):
    """A connection to the Sentinel-named primary whose writes fail as ConnectionError.

    Around a failover, the pool drops connections to the old primary while another task
    may be setting one up; uvloop then raises RuntimeError ("the handler is closed")
    from the write, which every caller would take for a bug (a 500 on ingest). It is a
    lost connection: say so, and the client's retry opens a new one."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            await self.disconnect()
            raise RedisConnectionError(f"connection closed while writing: {exc}") from exc


class SentinelPrimary(Redis):
    """The primary of a Sentinel-managed set; closing it closes the Sentinel clients too."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            await self.sentinels.aclose()
            self.sentinels = None


def sentinel_primary(target: SentinelTarget, options: dict[str, Any]) -> SentinelPrimary:
    sentinel_options = {
        "socket_connect_timeout": options["socket_connect_timeout"],
        # Sentinels answer at once; a blocking read's longer timeout is not theirs.
        "socket_timeout": options["socket_connect_timeout"],
        "socket_keepalive": True,
        "protocol": 2,
        # No retry with backoff on one Sentinel: the next one in the list is the retry.
        "retry": Retry(NoBackoff(), 0),
    }
    if target.sentinel_username:
        sentinel_options["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_options["password"] = target.sentinel_password
    primary_options = dict(options, db=target.db, connection_class=SentinelConnection)
    if target.username:
        primary_options["username"] = target.username
    if target.password:
        primary_options["password"] = target.password
    sentinels = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call, unused-ignore]
    client = sentinels.master_for(target.service, redis_class=SentinelPrimary, **primary_options)
    assert isinstance(client, SentinelPrimary)
    client.sentinels = sentinels
    return client


POOL_SIZE = 100  # connections per client at most (redis-py's default)


def connect(settings: Settings, *, blocking_ms: int = 0, retries: int = 1) -> Redis:
    """A client (with its own pool) for `settings.redis_url`; no I/O until first use."""
    options = redis_options(settings, blocking_ms=blocking_ms, retries=retries)
    if settings.redis_cluster:
        # Typed as Redis: callers use the commands both have; what differs in cluster
        # mode (one hash slot per script or MULTI, sharded pub/sub) is decided by
        # `settings.redis_cluster` and `Keys.cluster` where it matters.
        return cast(Redis, RedisCluster.from_url(settings.redis_url, **options))
    if is_sentinel(settings.redis_url):
        return sentinel_primary(parse_sentinel_url(settings.redis_url), options)
    # A burst of commands (a connect storm: thousands of subscribes reading history at
    # once) waits for one of the pool's connections instead of failing: redis-py's
    # plain pool raises "Too many connections" past its 100, which a subscribe
    # answered `unavailable` (`python -m bench.storm`).
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=POOL_SIZE,
        timeout=settings.redis_timeout_s,
        **options,
    )
    return Redis.from_pool(pool)
