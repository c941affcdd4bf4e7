"""Reference server for bench/: stock python-socketio, as its documentation sets it up.

AsyncServer on aiohttp with AsyncRedisManager, default options (so permessage-deflate is
on for clients that offer it, as browsers do), default asyncio event loop. Same wire
contract as realtime for what the benchmark uses: `subscribe {topic}` joins the room and
acks {ok, topic}; `update` events arrive from the publisher through Redis.

Usage: python bench/ref/pysio_server.py PORT REDIS_URL
"""

from __future__ import annotations

import sys
from typing import Any

import socketio
from aiohttp import web


def main(port: int, redis_url: str) -> None:
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=socketio.AsyncRedisManager(redis_url)
    )

    @sio.on("subscribe")  # type: ignore[untyped-decorator]
    async def subscribe(sid: str, payload: Any) -> dict[str, Any]:
        topic = payload.get("topic") if isinstance(payload, dict) else None
        if not isinstance(topic, str):
            return {"ok": False, "error": {"code": "invalid"}}
        await sio.enter_room(sid, topic)
        return {"ok": True, "topic": topic}

    async def readyz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    sio.attach(app)
    app.router.add_get("/readyz", readyz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
