"""Per-partition stream gauges for the worker's metrics, read from Redis at scrape time:
how far behind the consumer group is (lag) and what it holds unacknowledged (pending).
Each worker reports the partitions it owns now."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.core.keys import Keys
from realtime.core.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 2.0


class StreamStats:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        group: str,
        owned: Callable[[], Iterable[int]],
        metrics: WorkerMetrics,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group.encode()
        self.owned = owned
        self.metrics = metrics

    async def refresh(self) -> None:
        """Set the gauges for the owned partitions, and drop those of others. On a Redis
        error the gauges are left out of this scrape rather than reported stale."""
        self.metrics.stream_lag.clear()
        self.metrics.stream_pending.clear()
        try:
            async with asyncio.timeout(SCRAPE_TIMEOUT_S):
                for partition in sorted(self.owned()):
                    groups = await self.redis.xinfo_groups(self.keys.ingest(partition))
                    self._set(partition, groups)
        except (RedisError, OSError, TimeoutError) as exc:
            self.metrics.redis_error("metrics")
            logger.warning("stream gauges unavailable: %s", exc)

    def _set(self, partition: int, groups: list[dict[str, object]]) -> None:
        for info in groups:
            name = info.get("name")
            if (name.encode() if isinstance(name, str) else name) != self.group:
                continue
            label = str(partition)
            pending = info.get("pending")
            if isinstance(pending, int):
                self.metrics.stream_pending.labels(label).set(pending)
            lag = info.get("lag")  # Redis 7+; None when Redis cannot tell
            if isinstance(lag, int):
                self.metrics.stream_lag.labels(label).set(lag)
