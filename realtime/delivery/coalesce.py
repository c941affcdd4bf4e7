"""Reads asked for together, made once: the history reads of a connect storm.

Thousands of clients that connect at once subscribe to a handful of topics, and each
subscribe reads its topic's newest events (its snapshot), or what it missed after the
same `since` (every client of a topic got the same events before it was dropped). One
XREVRANGE per subscribe was a large part of a connect's cost, and of Redis's
(`python -m bench.storm`). Here reads of the same key share one: with none of that key
out, a read goes on the next turn of the event loop (with the others asked for in this
one); while one is out, the reads asked for meanwhile wait for it to end and then go
together. So an idle server adds no wait, and a busy one at most one read's, or
`gather_s`: reads go at most once per `gather_s`, so under a storm each read serves the
subscribes of its last few milliseconds, not only those of one turn of the loop (each
read is a pipeline with a fixed cost in the web's CPU, and its page is decoded again).

Why no subscriber misses an event: each caller has asked (after its subscription began
buffering live events) before the shared read is sent, so the read sees at least what
the caller's own read would have seen; a caller never joins a read already sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from math import inf
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
    (the caller takes its part of the answer).

    With `many`, the reads due in one turn of the event loop, whatever their keys, go
    in one call of `many([(key, size), ...])` (one round trip: a Redis command alone
    was ~200 us of the web's CPU, ~60 in a pipeline); a key's next read waits for
    that whole call to end.

    With `gather_s`, reads are sent no sooner than `gather_s` after the last were: what
    is asked for meanwhile waits and goes together (the first read after a quiet
    spell goes at the next turn, as without)."""

    def __init__(
        self,
        read: Callable[[K, int], Awaitable[T]],
        many: Callable[[list[tuple[K, int]]], Awaitable[list[T]]] | None = None,
        gather_s: float = 0.0,
    ) -> None:
        self._read = read
        self._many = many
        self.gather_s = gather_s
        self._sent_at = -inf  # loop time of the last send
        self._open: dict[K, _Batch[T]] = {}  # asked for, not sent yet
        self._out: set[K] = set()  # keys with a read out
        self._due: list[K] = []  # keys whose read goes at the next turn
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, key: K, size: int) -> T:
        batch = self._open.get(key)
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._open[key] = _Batch(loop.create_future(), size)
            if key not in self._out:
                self._schedule(key)
        elif size > batch.size:
            batch.size = size
        # Shielded: a caller that gives up (its client left) leaves the read to the others.
        return await asyncio.shield(batch.future)

    def _schedule(self, key: K) -> None:
        if not self._due:
            loop = asyncio.get_running_loop()
            at = self._sent_at + self.gather_s
            if at > loop.time():
                loop.call_at(at, self._send)
            else:
                loop.call_soon(self._send)
        self._due.append(key)

    def _send(self) -> None:
        due, self._due = self._due, []
        sent = [(key, batch) for key in due if (batch := self._open.pop(key, None)) is not None]
        if not sent:
            return
        self._sent_at = asyncio.get_running_loop().time()
        self._out.update(key for key, _ in sent)
        if self._many is None or len(sent) == 1:
            for key, batch in sent:
                self._start(self._run([key], self._one(key, batch.size), [batch]))
        else:
            asked = [(key, batch.size) for key, batch in sent]
            keys = [key for key, _ in sent]
            self._start(self._run(keys, self._many(asked), [b for _, b in sent]))

    async def _one(self, key: K, size: int) -> list[T]:
        return [await self._read(key, size)]

    def _start(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, keys: list[K], reading: Awaitable[list[T]], batches: list[_Batch[T]]
    ) -> None:
        try:
            result = await reading
        except BaseException as exc:
            self._next(keys)
            for batch in batches:
                future = batch.future
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.add_done_callback(_retrieved)  # every caller may have left
            if not isinstance(exc, Exception):
                raise
            return
        self._next(keys)
        for batch, answer in zip(batches, result, strict=True):
            if not batch.future.done():
                batch.future.set_result(answer)

    def _next(self, keys: list[K]) -> None:
        """Reads of `keys` ended: the ones asked for meanwhile go at the next turn."""
        for key in keys:
            self._out.discard(key)
            if key in self._open:
                self._schedule(key)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
