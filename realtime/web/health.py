"""Health endpoints: `/healthz` says the process is alive, `/readyz` that it can serve."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

READY_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class Readiness:
    """Ready when not draining and Redis answers a PING within `READY_TIMEOUT_S`."""

    def __init__(self, redis_key: web.AppKey[Redis], draining: Callable[[], bool]) -> None:
        self.redis_key = redis_key
        self.draining = draining

    async def handle(self, request: web.Request) -> web.Response:
        if self.draining():
            return web.json_response({"status": "unavailable", "reason": "draining"}, status=503)
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await request.app[self.redis_key].ping()
        except (RedisError, OSError, TimeoutError):
            return web.json_response({"status": "unavailable", "reason": "redis"}, status=503)
        return web.json_response({"status": "ready"})
