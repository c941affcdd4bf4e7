"""The floor of an HTTP request on aiohttp, for `python -m bench.ingest`: the same server
(aiohttp on uvloop, no access log) with one handler that reads the body and answers 202
with a fixed JSON body, no middleware, no validation, no Redis.

    python bench/ref/bare_aiohttp.py PORT
"""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

ANSWER = b'{"ids":["1700000000000-0"]}'


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, status=202, content_type="application/json", charset="utf-8")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_post("/api/v1/events", accept)
    app.router.add_get("/readyz", ready)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
