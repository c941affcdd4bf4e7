"""The web app running inside the test's event loop, against real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestServer

from realtime.core.settings import Settings
from realtime.dev.embedded import free_port
from realtime.web.app import create_app, server_options


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[TestServer, web.Application]]:
    """Serve `create_app(settings)` on a free loopback port; yields the server and app."""
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    # start_server's keyword arguments reach the runner (the constructor's do not).
    await server.start_server(**server_options(settings))
    try:
        yield server, app
    finally:
        await server.close()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[str, web.Application]]:
    """Serve `create_app(settings)` on a free loopback port; yields its base URL and app."""
    async with served(settings) as (server, app):
        yield str(server.make_url("")).rstrip("/"), app


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[str]:
    """Serve `create_app(settings)` on a free loopback port; yields its base URL."""
    async with serving(settings) as (url, _):
        yield url
