"""The web process's life (`realtime serve`): listen, run until SIGTERM, drain, close.

In the order of uvicorn's shutdown: on SIGTERM (or Ctrl-C) the drain runs first, while
the listener is still open, so `/readyz` can answer 503 and new connections can be
refused (`realtime.delivery.drain`); then aiohttp stops listening, waits for in-flight requests
with what is left of `REALTIME_DRAIN_S`, and closes everything. A second signal cuts the
drain short.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from realtime.core.gctune import tuned_gc
from realtime.core.loopwatch import watched
from realtime.core.settings import Settings
from realtime.web.app import DRAIN, METRICS, server_options

logger = logging.getLogger(__name__)

MIN_CLOSE_S = 1.0


async def serve(app: web.Application, settings: Settings) -> None:
    drain = app[DRAIN]
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        # A long-poll whose client went away is cancelled instead of holding shutdown.
        handler_cancellation=True,
        shutdown_timeout=max(drain.close_budget_s / 2, MIN_CLOSE_S),
        **server_options(settings),
    )
    await runner.setup()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            logger.info("%s again: disconnecting everyone now", sig.name)
            drain.hurry()
        else:
            logger.info("%s: draining for up to %gs", sig.name, settings.drain_s)
            stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await web.TCPSite(
            runner, settings.host, settings.port, backlog=settings.listen_backlog
        ).start()
        with tuned_gc():
            async with watched(app[METRICS]):
                await stop.wait()
        await drain.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    logger.info("web stopped")
