"""Reads asked for together, made once: the history reads of a connect storm.

Thousands of clients that connect at once subscribe to a handful of topics, and each
subscribe reads its topic's newest events (its snapshot), or what it missed after the
same `since` (every client of a topic got the same events before it was dropped). One
XREVRANGE per subscribe was a large part of a connect's cost, and of Redis's
(`python -m bench.storm`). Here reads of the same key share one: with none of that key
out, a read goes on the next turn of the event loop (with the others asked for in this
one); while one is out, the reads asked for meanwhile wait for it to end and then go
together. So an idle server adds no wait, and a busy one at most one read's.

Why no subscriber misses an event: each caller has asked (after its subscription began
buffering live events) before the shared read is sent, so the read sees at least what
the caller's own read would have seen; a caller never joins a read already sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class _Batch(Generic[T]):
    __slots__ = ("future", "size")

    def __init__(self, future: asyncio.Future[T], size: int) -> None:
        self.future = future
        self.size = size


class Coalesced(Generic[K, T]):
    """`await coalesced(key, size)`: `read(key, size)`, shared with every call of the
    same key made before it was sent, with the largest size any of them asked for
    (the caller takes its part of the answer)."""

    def __init__(self, read: Callable[[K, int], Awaitable[T]]) -> None:
        self._read = read
        self._open: dict[K, _Batch[T]] = {}  # asked for, not sent yet
        self._out: set[K] = set()  # keys with a read out
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, key: K, size: int) -> T:
        batch = self._open.get(key)
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._open[key] = _Batch(loop.create_future(), size)
            if key not in self._out:
                loop.call_soon(self._send, key)
        elif size > batch.size:
            batch.size = size
        # Shielded: a caller that gives up (its client left) leaves the read to the others.
        return await asyncio.shield(batch.future)

    def _send(self, key: K) -> None:
        batch = self._open.pop(key, None)
        if batch is None:
            return
        self._out.add(key)
        task = asyncio.ensure_future(self._run(key, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K, batch: _Batch[T]) -> None:
        future = batch.future
        try:
            result = await self._read(key, batch.size)
        except BaseException as exc:
            self._next(key)
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.add_done_callback(_retrieved)  # every caller may have left
            if not isinstance(exc, Exception):
                raise
            return
        self._next(key)
        if not future.done():
            future.set_result(result)

    def _next(self, key: K) -> None:
        """A read of `key` ended: the ones asked for meanwhile go now, together."""
        self._out.discard(key)
        if key in self._open:
            self._send(key)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
