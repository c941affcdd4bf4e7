"""The browser side of the web process: the dashboard at `/` and the JS client helper.

The dashboard is built by Vite from `dashboard/` into `realtime/static/dashboard/`
(`make dashboard`, or `make run` when npm is present). Built files are not committed:
without a build, `/` serves a page that says how to make one, and everything else works.
`/static/realtime-client.js` is the resume helper for socket.io-client (README: "Resume
after a reconnect"), importable straight from any realtime server.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from aiohttp import web

STATIC_DIR = resources.files("realtime") / "static"
BUILT_DIR = STATIC_DIR / "dashboard"
CLIENT_HELPER = "realtime-client.js"
# Vite's output names: hashed, flat, no path separators.
ASSET_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(js|css|svg|png|woff2?|map)$")


def is_built(directory: Path | None = None) -> bool:
    return ((directory or Path(str(BUILT_DIR))) / "index.html").is_file()


class Dashboard:
    def __init__(self, directory: Path | None = None) -> None:
        # Looked up per request, so a build made while the server runs is picked up.
        self.directory = directory if directory is not None else Path(str(BUILT_DIR))

    async def index(self, request: web.Request) -> web.FileResponse:
        if is_built(self.directory):
            return web.FileResponse(
                self.directory / "index.html", headers={"Cache-Control": "no-cache"}
            )
        return web.FileResponse(
            str(STATIC_DIR / "index.html"), headers={"Cache-Control": "no-cache"}
        )

    async def asset(self, request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        path = self.directory / "assets" / name
        if not ASSET_NAME.fullmatch(name) or not path.is_file():
            raise web.HTTPNotFound()
        # Content-hashed names: a new build gets new names, so these never change.
        return web.FileResponse(
            path, headers={"Cache-Control": "public, max-age=31536000, immutable"}
        )


async def client_helper(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        str(STATIC_DIR / CLIENT_HELPER),
        headers={"Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache"},
    )


def add_routes(app: web.Application, directory: Path | None = None) -> None:
    dashboard = Dashboard(directory)
    app.router.add_get("/", dashboard.index)
    app.router.add_get("/assets/{name}", dashboard.asset)
    app.router.add_get(f"/static/{CLIENT_HELPER}", client_helper)
