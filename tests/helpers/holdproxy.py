"""A TCP proxy in front of Redis whose client -> Redis direction can be held: what
clients send meanwhile stays with the proxy (bytes on their way, as on a slow network)
until `release`, even if the client has died since; Redis -> client always flows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from realtime.dev.embedded import free_port


@dataclass
class _Link:
    to_redis: asyncio.StreamWriter
    held: bytearray = field(default_factory=bytearray)


class HoldProxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self._links: list[_Link] = []
        self._open = asyncio.Event()  # set: the client -> Redis direction flows
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> HoldProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        """What was held goes to Redis, in order, before anything sent after it."""
        self._open.set()
        for link in self._links:
            if link.held:
                link.to_redis.write(bytes(link.held))
                link.held.clear()

    def held_bytes(self) -> bytes:
        """What is held back, all connections."""
        return b"".join(link.held for link in self._links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection(*self.upstream)
        link = _Link(redis_w)
        self._links.append(link)
        for task in (self._up(reader, link), _down(redis_r, writer)):
            self._tasks.add(asyncio.create_task(task))

    async def _up(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """Client -> Redis; read at once (so the client's kernel is done with the bytes)."""
        with contextlib.suppress(OSError):  # a dead client's reset: what was read stays
            while chunk := await reader.read(65536):
                if self._open.is_set():
                    link.to_redis.write(chunk)
                else:
                    link.held += chunk
        await self._open.wait()  # then `release` has written what was held
        link.to_redis.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self._links:
            link.to_redis.close()


async def _down(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Redis -> client."""
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
        writer.close()


@contextlib.asynccontextmanager
async def hold_proxy(host: str, port: int) -> AsyncIterator[HoldProxy]:
    proxy = await HoldProxy(host, port).start()
    try:
        yield proxy
    finally:
        await proxy.aclose()
