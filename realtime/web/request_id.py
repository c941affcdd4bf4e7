"""A request id for every HTTP request to the web process, in its log lines and its answer.

An incoming `X-Request-ID` (set by a load balancer or the caller) is kept when it looks
like an id; otherwise one is generated. The id is bound as the `request_id` log context
for the handler and echoed in the response's `X-Request-ID` header, including on the
Socket.IO long-poll and websocket-upgrade answers.
"""

from __future__ import annotations

import re
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from realtime.core.logs import current_context, log_context

HEADER = "X-Request-ID"
# Long enough for a UUID or a trace id; nothing that could forge a log line.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def request_id_of(request: web.Request) -> str:
    incoming = request.headers.get(HEADER, "")
    if _ACCEPTABLE.fullmatch(incoming):
        return incoming
    # 32 hex digits from the OS's random source as uuid4().hex, without building a UUID.
    return secrets.token_hex(16)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id_of(request)
    with log_context(request_id=rid):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404, 405, ...: answered by aiohttp
            exc.headers[HEADER] = rid
            raise
    if not response.prepared:
        response.headers[HEADER] = rid
    return response


async def _echo_header(request: web.Request, response: web.StreamResponse) -> None:
    """For responses a handler sends itself (websocket upgrade, long-poll stream): they
    are prepared inside the handler, so inside the request's log context."""
    rid = current_context().get("request_id")
    if rid is not None and HEADER not in response.headers:
        response.headers[HEADER] = rid


def install(app: web.Application) -> None:
    """Add the middleware (outermost, so every other middleware logs with the id) and
    the response header."""
    app.middlewares.insert(0, request_id_middleware)
    app.on_response_prepare.append(_echo_header)
