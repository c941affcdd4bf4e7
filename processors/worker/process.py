"""The worker process (`realtime process`): wires Redis, the fan-out encoder and the
consumer loop."""

from __future__ import annotations

import asyncio
import logging
import signal

from processors.worker.consumer import Consumer
from processors.worker.stream_stats import StreamStats
from realtime.core.connections import connect
from realtime.core.gctune import tuned_gc
from realtime.core.keys import Keys
from realtime.core.loopwatch import watched
from realtime.core.metrics import WorkerMetrics
from realtime.core.metrics_server import private_metrics
from realtime.core.settings import Settings
from realtime.core.wire import UpdateEncoder

logger = logging.getLogger(__name__)


async def run_worker(
    settings: Settings, *, burst: bool = False, stop: asyncio.Event | None = None
) -> int:
    """Run until SIGTERM/SIGINT (or `stop`); returns the number of entries processed."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # No automatic retry: a consumer-group read resent after a lost reply would strand
    # the entries of the first one. The runners handle errors themselves (recovery).
    redis = connect(settings, blocking_ms=settings.block_ms, retries=0)
    metrics = WorkerMetrics()
    consumer = Consumer(redis, UpdateEncoder.of(settings), settings, metrics=metrics)
    # Its own client: a scrape must not queue behind the coordinator's blocking reads.
    stats_redis = connect(settings)
    stats = StreamStats(
        stats_redis, Keys.of(settings), settings.group, consumer.partitions, metrics
    )
    metrics.on_scrape(stats.refresh)
    logger.info(
        "worker %s sharing %d partition(s) as group %s (lease %d ms)",
        consumer.owner,
        settings.partitions,
        settings.group,
        settings.lease_ms,
    )
    try:
        with tuned_gc():
            async with (
                private_metrics(metrics, settings.host, settings.metrics_port),
                watched(metrics),
            ):
                await consumer.run(stop, burst=burst)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await stats_redis.aclose()
        await redis.aclose()
    logger.info("worker %s stopped after %d entries", consumer.owner, consumer.processed)
    return consumer.processed
