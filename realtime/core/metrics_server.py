"""`/metrics` on the private port (`REALTIME_METRICS_PORT`, off when 0 or unset): web and
worker processes both open it, for scrapers inside the cluster. The web's guarded public
`/metrics` is `realtime.web.metrics_http`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from realtime.core.metrics import CONTENT_TYPE, ProcessMetrics

logger = logging.getLogger(__name__)

PATH = "/metrics"


async def respond(metrics: ProcessMetrics) -> web.Response:
    return web.Response(body=await metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})


@asynccontextmanager
async def private_metrics(metrics: ProcessMetrics, host: str, port: int) -> AsyncIterator[None]:
    """Serve `/metrics` on `host:port` for the duration (nothing when `port` is 0)."""
    if not port:
        yield
        return

    async def handle(request: web.Request) -> web.Response:
        return await respond(metrics)

    app = web.Application()
    app.router.add_get(PATH, handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        logger.info("metrics on http://%s:%d%s", host, port, PATH)
        yield
    finally:
        await runner.cleanup()
