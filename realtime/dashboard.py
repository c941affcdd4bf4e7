"""The browser side of the web process: the page at `/` and the JS client helper.

`/static/realtime-client.js` is the resume helper for socket.io-client (README: "Resume
after a reconnect"), importable straight from any realtime server.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

STATIC_DIR = resources.files("realtime") / "static"
CLIENT_HELPER = "realtime-client.js"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(str(STATIC_DIR / "index.html"))


async def client_helper(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        str(STATIC_DIR / CLIENT_HELPER),
        headers={"Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get(f"/static/{CLIENT_HELPER}", client_helper)
