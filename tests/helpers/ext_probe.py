"""An extension for tests/test_extensions.py: one of each thing an extension may add."""

from __future__ import annotations

from typing import Any

import socketio
from aiohttp import web

from realtime.web.extensions import CLAIMS

CHAT = "/chat"


class Chat(socketio.AsyncNamespace):  # type: ignore[misc]
    async def on_connect(self, sid: str, environ: Any, auth: Any = None) -> None:
        if isinstance(auth, dict) and "refuse" in auth:
            raise socketio.exceptions.ConnectionRefusedError(auth["refuse"])
        session = await self.get_session(sid)
        await self.emit("hello", {"sub": session[CLAIMS].get("sub")}, to=sid)

    async def on_say(self, sid: str, text: Any) -> tuple[str, Any]:
        return "heard", text


def setup(sio: socketio.AsyncServer, app: web.Application) -> None:
    seen = {"connects": 0, "disconnects": 0}

    async def connect(sid: str, environ: Any, auth: Any = None) -> None:
        seen["connects"] += 1
        if isinstance(auth, dict) and "refuse" in auth:
            raise socketio.exceptions.ConnectionRefusedError(auth["refuse"])
        if isinstance(auth, dict) and "boom" in auth:
            raise RuntimeError("a bug in the extension")
        claims = (await sio.get_session(sid))[CLAIMS]
        await sio.emit(
            "welcome", {"sub": claims.get("sub"), "topics": claims.get("topics")}, to=sid
        )

    async def disconnect(sid: str, reason: Any) -> None:
        seen["disconnects"] += 1

    async def hyphenated(sid: str, *args: Any) -> Any:
        return {"got": list(args)}

    async def pair(sid: str, a: Any, b: Any) -> tuple[Any, Any]:
        return b, a  # two ack arguments

    async def echo_binary(sid: str, *args: Any) -> tuple[Any, ...]:
        """The sizes of the bytes arguments, then each of them reversed (a binary ack)."""
        blobs = [a for a in args if isinstance(a, bytes)]
        return [len(b) for b in blobs], *[b[::-1] for b in blobs]

    async def boom(sid: str, *args: Any) -> None:
        raise RuntimeError("a bug in the extension")

    async def counts(request: web.Request) -> web.Response:
        return web.json_response(seen)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    sio.on("hyphen-ated", hyphenated)
    sio.on("pair", pair)
    sio.on("echo-binary", echo_binary)
    sio.on("boom", boom)
    sio.register_namespace(Chat(CHAT))
    app.router.add_get("/probe/counts", counts)
