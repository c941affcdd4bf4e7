"""Which topic a `subscribe {topic, from, resolution: "auto", points}` is served: the tier
of `processors/pipelines/tiers.py` that draws the range from `from` to now in about
`points` points, learnt from the pipelines file the web process loads anyway.
"""

from __future__ import annotations

import functools
import time

from processors.pipelines.config import PipelinesConfig
from processors.pipelines.retention import Retention
from processors.pipelines.tiers import DEFAULT_POINTS, RAW, Tier, pick, tiers_of


class Resolutions:
    def __init__(self, config: PipelinesConfig, retention: Retention) -> None:
        self.config = config
        self.retention = retention
        self._tiers = functools.lru_cache(maxsize=4096)(self._find)

    def _find(self, topic: str) -> tuple[Tier, ...]:
        return tuple(tiers_of(self.config, topic, self.retention))

    def served(
        self, topic: str, start_ms: int, points: int | None, now_ms: float | None = None
    ) -> tuple[str, str]:
        """(the topic to serve, its resolution: a window label such as `1m`, or `raw`
        for a topic the pipelines make no windows of)."""
        now = time.time() * 1000 if now_ms is None else now_ms
        range_ms = max(int(now) - start_ms, 0)
        tier = pick(list(self._tiers(topic)), range_ms, points or DEFAULT_POINTS)
        return (topic, RAW) if tier is None else (tier.topic, tier.label)
