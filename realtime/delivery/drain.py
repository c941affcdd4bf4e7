"""Graceful drain of a web process (SIGTERM): move its clients elsewhere, gently.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from realtime.core import errors
from realtime.core.metrics import WebMetrics
from realtime.transport.server import SocketServer

logger = logging.getLogger(__name__)

STEP_S = 0.1  # a batch of disconnects this often
CLOSE_SHARE = 0.25  # of the drain time, for closing the process once all are gone...
CLOSE_MIN_S = 2.0  # ... but at least this (closing takes about a second on a busy host)


def windows(drain_s: float) -> tuple[float, float]:
    """(disconnecting, closing): how `drain_s` is shared between the two (pure)."""
    closing = min(max(drain_s * CLOSE_SHARE, CLOSE_MIN_S), drain_s / 2)
    return drain_s - closing, closing


def schedule(count: int, window_s: float, step_s: float = STEP_S) -> list[tuple[float, int, int]]:
    """`count` connections spread evenly over `window_s`: a list of (offset in seconds,
    start, end) slices of them, one batch per step (pure)."""
    if count <= 0:
        return []
    steps = max(1, min(count, int(window_s / step_s)))
    return [
        (i * window_s / steps, i * count // steps, (i + 1) * count // steps) for i in range(steps)
    ]


class Drain:
    def __init__(self, sio: SocketServer, drain_s: float, metrics: WebMetrics) -> None:
        self.sio = sio
        self.drain_s = drain_s
        self.metrics = metrics
        self.draining = False
        self._hurry = asyncio.Event()
        # Set when streams of plain HTTP (SSE) must end: the drain began or the app stops.
        self.ending = asyncio.Event()

    @property
    def close_budget_s(self) -> float:
        """What is left after the disconnects, for closing the process."""
        return windows(self.drain_s)[1]

    def hurry(self) -> None:
        """Drop everyone left now (a second signal)."""
        self._hurry.set()

    async def run(self) -> None:
        """Refuse new connections and disconnect the current ones, spread over the window."""
        self.draining = True
        self.metrics.draining.set(1)
        self.ending.set()  # SSE streams end now, each with a `retry:` hint
        connections = self.sio.open_connections()
        window = windows(self.drain_s)[0]
        logger.info("draining: disconnecting %d connection(s) over %.1fs", len(connections), window)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for offset, first, end in schedule(len(connections), window):
            if not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(start + offset):
                        await self._hurry.wait()
            await self._drop(connections[first:end])
        # Whoever got in meanwhile (a websocket upgrade of an older session, say).
        await self._drop(self.sio.open_connections())
        logger.info("drained in %.1fs", loop.time() - start)

    async def _drop(self, eio_sids: list[str]) -> None:
        for eio_sid in eio_sids:
            if await self.sio.drop_connection(eio_sid):
                self.metrics.disconnects.labels("drain").inc()

    def refuse_new_connections(self, socketio_path: str) -> Middleware:
        """While draining: a new Engine.IO session (a request without `sid`) is answered
        503, which socket.io clients treat as a failed attempt and retry elsewhere."""
        prefix = "/" + socketio_path.strip("/") + "/"

        @web.middleware
        async def refuse(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.draining and request.path == prefix and "sid" not in request.query:
                return web.json_response(
                    errors.error_body(errors.UNAVAILABLE, "This instance is shutting down."),
                    status=503,
                    headers={"Retry-After": "1"},
                )
            return await handler(request)

        return refuse
