"""`/metrics` on the web's public port: open with `REALTIME_INSECURE=1` (development);
otherwise HTTP Basic with the admin credentials (`REALTIME_ADMIN_USER` / `_PASSWORD`),
and 404 without those (use the private port, `realtime.core.metrics_server`). Also the
ingest API's response counter."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from realtime.core import errors
from realtime.core.metrics import ProcessMetrics, WebMetrics
from realtime.core.metrics_server import respond
from realtime.core.peer import TrustedProxies
from realtime.core.settings import Settings
from realtime.core.throttle import Throttle, locked_out
from realtime.web import admin

logger = logging.getLogger(__name__)


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

    def __init__(
        self, metrics: ProcessMetrics, settings: Settings, throttle: Throttle | None = None
    ) -> None:
        self.metrics = metrics
        self.open = settings.insecure
        self.enabled = settings.admin_enabled
        self.check = admin.credentials_check(settings)
        self.throttle = throttle  # failed credentials (realtime.core.throttle)
        self.proxies = TrustedProxies(settings.trusted_proxies)

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
            refusal = await self._refusal(request)
            if refusal is not None:
                return refusal
        return await respond(self.metrics)

    async def _refusal(self, request: web.Request) -> web.Response | None:
        """None if the request carries the admin credentials; else the answer (a guess
        counts against the client's address and the username it tried)."""
        given = _basic_credentials(request.headers.get("Authorization", ""))
        if given is None:
            return _unauthorized()  # not a guess: nothing presented (a browser's first try)
        user, password = given
        address = self.proxies.peer_of(request).address
        if self.throttle is not None:
            wait_s = await self.throttle.wait_s(address, user)
            if wait_s:
                response = web.json_response(
                    errors.error_body(errors.LIMIT, locked_out(wait_s)),
                    status=429,
                )
                response.headers["Retry-After"] = str(wait_s)
                return response
        if self.check({"username": user, "password": password}):
            return None
        if self.throttle is not None:
            await self.throttle.failed(address, user)
        return _unauthorized()


def _unauthorized() -> web.Response:
    return web.json_response(
        errors.error_body(errors.UNAUTHORIZED, "Metrics need the admin credentials."),
        status=401,
        headers={"WWW-Authenticate": 'Basic realm="realtime metrics"'},
    )


def ingest_status_counter(metrics: WebMetrics, path: str) -> Middleware:
    """Counts the responses to `path` (the ingest API) by status, errors included."""

    counters: dict[int, Any] = {}  # status -> its labelled child (labels() is slow)

    def counted(status: int) -> None:
        counter = counters.get(status)
        if counter is None:
            counter = counters[status] = metrics.ingest_requests.labels(str(status))
        counter.inc()

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != path:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            counted(exc.status)
            raise
        except Exception:
            counted(500)
            raise
        counted(response.status)
        return response

    return count
