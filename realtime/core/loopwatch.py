"""What holds a process's event loop, in its metrics: how late a timer due every
SAMPLE_S runs (`realtime_event_loop_lag_seconds`) and how long each cyclic garbage
collection takes, by generation (`realtime_gc_pause_seconds`).

Why: the p99 of `python -m bench.latency` was one stall of 20-30 ms every 2 s (the web
writing every session's recovery record in one go), invisible in the stage histograms,
which time events, not the loop. A timer at this period costs nothing measurable; it
sees a stall with a probability of its length over SAMPLE_S, so a recurring one shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

from realtime.core.metrics import ProcessMetrics

SAMPLE_S = 0.1


@contextlib.asynccontextmanager
async def watched(metrics: ProcessMetrics, sample_s: float = SAMPLE_S) -> AsyncIterator[None]:
    """Within the block: the loop's lag sampled, every collection timed."""
    began = 0.0

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        # A collection runs with the GIL held from start to stop: no other in between.
        nonlocal began
        if phase == "start":
            began = time.perf_counter()
        else:
            metrics.gc_pause.labels(str(info["generation"])).observe(time.perf_counter() - began)

    async def sample() -> None:
        while True:
            due = time.monotonic() + sample_s
            await asyncio.sleep(sample_s)
            metrics.loop_lag.observe(max(time.monotonic() - due, 0.0))

    gc.callbacks.append(on_gc)
    sampler = asyncio.create_task(sample())
    try:
        yield
    finally:
        gc.callbacks.remove(on_gc)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
