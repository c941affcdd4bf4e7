"""Demo metrics for `realtime dev`: a few topics with random-walk values, posted over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

DEMO_TOPICS = ("metrics.cpu", "metrics.memory", "metrics.requests", "events.orders")
# topic, lowest, highest, largest step per tick
_WALKS = (
    ("metrics.cpu", 0.0, 100.0, 4.0),
    ("metrics.memory", 0.0, 100.0, 1.0),
    ("metrics.requests", 0.0, 1000.0, 25.0),
)


@dataclass
class DemoFeed:
    """Pure generator of demo events: call `next_batch()` for the next tick's events."""

    seed: int | None = None
    _rng: random.Random = field(init=False)
    _values: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._values = {"metrics.cpu": 35.0, "metrics.memory": 62.0, "metrics.requests": 120.0}

    def _walk(self, topic: str, lo: float, hi: float, step: float) -> float:
        value = self._values[topic] + self._rng.uniform(-step, step)
        self._values[topic] = min(hi, max(lo, value))
        return round(self._values[topic], 2)

    def next_batch(self) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        batch: list[dict[str, Any]] = [
            {"topic": topic, "ts": now, "data": {"value": self._walk(topic, lo, hi, step)}}
            for topic, lo, hi, step in _WALKS
        ]
        if self._rng.random() < 0.3:
            batch.append({
                "topic": "events.orders",
                "ts": now,
                "data": {
                    "order": self._rng.randrange(10_000, 99_999),
                    "region": self._rng.choice(["eu", "us", "apac"]),
                    "value": round(self._rng.uniform(5, 500), 2),
                },
            })  # fmt: skip
        return batch


async def run_demo_feed(
    base_url: str, stop: asyncio.Event, interval_s: float = 0.2, *, key: str = ""
) -> None:
    """Post a demo batch every `interval_s` until `stop` (with the publish `key`, if any);
    a failed post is logged, not fatal."""
    feed = DemoFeed()
    url = base_url.rstrip("/") + "/api/v1/events"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(headers=headers) as session:
        while not stop.is_set():
            try:
                async with session.post(url, json=feed.next_batch()) as response:
                    if response.status != 202:
                        logger.warning("demo feed: %s %s", response.status, await response.text())
            except aiohttp.ClientError as exc:
                logger.warning("demo feed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
