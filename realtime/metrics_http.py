"""`/metrics` over HTTP: on the web's public port (guarded), and on a private port.

- The private port (`REALTIME_METRICS_PORT`, off when 0 or unset) serves `/metrics` to
  anyone who can reach it; web and worker processes both open it. It is meant to be
  reachable from inside the cluster only (no Service or Ingress routes to it).
- On the web's public port `/metrics` is open with `REALTIME_INSECURE=1` (development);
  otherwise it needs HTTP Basic with the admin credentials (`REALTIME_ADMIN_USER` /
  `_PASSWORD`), and without those it answers 404 (use the private port).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from realtime import admin
from realtime.core import errors
from realtime.core.metrics import CONTENT_TYPE, ProcessMetrics, WebMetrics
from realtime.core.settings import Settings

logger = logging.getLogger(__name__)

PATH = "/metrics"


async def _respond(metrics: ProcessMetrics) -> web.Response:
    return web.Response(body=await metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class PublicMetrics:
    """`GET /metrics` on the web's public port."""

    def __init__(self, metrics: ProcessMetrics, settings: Settings) -> None:
        self.metrics = metrics
        self.open = settings.insecure
        self.enabled = settings.admin_enabled
        self.check = admin.credentials_check(settings)

    def _allowed(self, request: web.Request) -> bool:
        given = _basic_credentials(request.headers.get("Authorization", ""))
        return given is not None and self.check({"username": given[0], "password": given[1]})

    async def handle(self, request: web.Request) -> web.Response:
        if not self.open:
            if not self.enabled:
                return web.json_response(
                    errors.error_body(
                        errors.NOT_FOUND,
                        "Metrics are served on REALTIME_METRICS_PORT, or here with the "
                        "admin credentials.",
                    ),
                    status=404,
                )
            if not self._allowed(request):
                return web.json_response(
                    errors.error_body(errors.UNAUTHORIZED, "Metrics need the admin credentials."),
                    status=401,
                    headers={"WWW-Authenticate": 'Basic realm="realtime metrics"'},
                )
        return await _respond(self.metrics)


@asynccontextmanager
async def private_metrics(metrics: ProcessMetrics, host: str, port: int) -> AsyncIterator[None]:
    """Serve `/metrics` on `host:port` for the duration (nothing when `port` is 0)."""
    if not port:
        yield
        return

    async def handle(request: web.Request) -> web.Response:
        return await _respond(metrics)

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


def ingest_status_counter(metrics: WebMetrics, path: str) -> Middleware:
    """Counts the responses to `path` (the ingest API) by status, errors included."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != path:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.ingest_requests.labels(str(exc.status)).inc()
            raise
        except Exception:
            metrics.ingest_requests.labels("500").inc()
            raise
        metrics.ingest_requests.labels(str(response.status)).inc()
        return response

    return count
