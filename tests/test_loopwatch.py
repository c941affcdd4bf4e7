"""What holds the event loop, in the metrics (`realtime/core/loopwatch.py`): a blocked
loop shows as a late timer of that length, each collection as a pause of its
generation, and nothing is watched outside the block."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from realtime.core.loopwatch import watched
from realtime.core.metrics import WebMetrics

pytestmark = pytest.mark.unit

SAMPLE_S = 0.01
STALL_S = 0.06


def over(metrics: WebMetrics, seconds: float) -> int:
    """Lag samples above `seconds` (a bucket bound)."""
    series = metrics.loop_lag
    return sum(series.counts[series.bounds.index(seconds) + 1 :])


def collections(metrics: WebMetrics, generation: str) -> float:
    return (
        metrics.registry.get_sample_value(
            "realtime_gc_pause_seconds_count", {"generation": generation}
        )
        or 0.0
    )


def block(seconds: float) -> None:
    """What a long synchronous step does to the loop (a busy one, as a checkpoint was)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass


async def test_a_blocked_loop_shows_as_a_late_timer_of_about_its_length() -> None:
    metrics = WebMetrics()
    async with watched(metrics, sample_s=SAMPLE_S):
        await asyncio.sleep(SAMPLE_S * 3)
        block(STALL_S)  # the timer due within it waits for the rest of it
        await asyncio.sleep(SAMPLE_S * 3)
        assert over(metrics, 0.025) >= 1
        assert metrics.loop_lag.sum >= STALL_S - SAMPLE_S
    count = sum(metrics.loop_lag.counts)
    await asyncio.sleep(SAMPLE_S * 3)
    assert sum(metrics.loop_lag.counts) == count  # the sampler stopped with the block


async def test_each_collection_is_timed_by_generation_within_the_block_only() -> None:
    metrics = WebMetrics()
    assert [collections(metrics, g) for g in ("0", "1", "2")] == [0, 0, 0]  # exposed at 0
    async with watched(metrics, sample_s=SAMPLE_S):
        gc.collect(1)
        gc.collect(2)
    assert collections(metrics, "1") >= 1
    assert collections(metrics, "2") >= 1
    seen = collections(metrics, "2")
    gc.collect(2)
    assert collections(metrics, "2") == seen  # the callback went with the block
