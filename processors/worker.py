"""The worker process (`realtime process`): wires Redis, fan-out and the consumer loop."""

from __future__ import annotations

import asyncio
import logging
import signal

from processors.consumer import Consumer
from realtime.connections import connect
from realtime.fanout import FanoutManager
from realtime.settings import Settings

logger = logging.getLogger(__name__)


async def run_worker(
    settings: Settings, *, burst: bool = False, stop: asyncio.Event | None = None
) -> int:
    """Run until SIGTERM/SIGINT (or `stop`); returns the number of entries processed."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = connect(settings, blocking_ms=settings.block_ms)
    fanout = FanoutManager(settings, write_only=True)
    consumer = Consumer(redis, fanout, settings)
    logger.info(
        "worker %s consuming %d partition(s) as group %s",
        settings.consumer,
        settings.partitions,
        settings.group,
    )
    try:
        await consumer.run(stop, burst=burst)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await fanout.aclose()
        await redis.aclose()
    logger.info("worker %s stopped after %d entries", settings.consumer, consumer.processed)
    return consumer.processed
