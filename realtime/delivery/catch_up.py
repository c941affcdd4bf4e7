"""Catch-up, a step of delivery: the backlog of a subscription (a replay after `since`,
or what it missed while the fan-out listener was reconnecting or the client was behind)
read from history page by page and sent through the subscription state, then its
buffered live events, until it is live. History reads are retried until Redis answers."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import orjson
from redis.exceptions import RedisError

from realtime.core.backoff import Backoff
from realtime.core.metrics import WebMetrics
from realtime.core.streamids import ZERO
from realtime.delivery.history import HistoryReader, WireEvent, covers
from realtime.delivery.subscriptions import Batch, Subscriptions, Target
from realtime.transport.frames import Frame

logger = logging.getLogger(__name__)

T = TypeVar("T")

PAGE = 500  # events per replayed `update` packet and per history read


class Page:
    """A page of history and its `update` frame, encoded once for all the targets that
    are sent the whole page (many, when a room catches up together), with one recovery
    offset for all of them (`offset`). `encoded`: the events as JSON, if known."""

    __slots__ = ("_frame", "encoded", "events", "offset")

    def __init__(
        self, events: list[WireEvent], offset: str | None = None, encoded: bytes | None = None
    ) -> None:
        self.events = events
        self.offset = offset
        self.encoded = encoded
        self._frame: Frame | None = None

    def frame(self) -> Frame:
        """The whole page's frame (a target sent part of it gets a frame of its own)."""
        if self._frame is None:
            if self.encoded is None:
                self._frame = Frame.update(self.events, self.offset)
            else:
                self._frame = Frame.update_json(self.encoded, self.offset)
        return self._frame


class PageJson:
    """The JSON and `Batch` of the last pages replayed, by the page (its identity): a
    history read is shared by every subscribe it answered (`coalesce.py`, and a resume
    returns the same page object while it holds the same events), but each one's replay
    is its own frame, with its own recovery offset, so the same page was encoded once
    per connection (1.8% of a 10,000-client reconnect storm's server samples, py-spy)
    and its ids parsed once per connection (`Batch.of`, 1.9%). Pages are shared and
    never changed (`history.py`); a page held here stays alive, so its identity is not
    reused while it is."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._known: OrderedDict[int, _Known] = OrderedDict()

    def batch(self, topic: str, page: list[WireEvent]) -> Batch:
        known = self._known_of(page)
        if known.batch is None or known.batch.topic != topic:
            known.batch = Batch.of(topic, page)
        return known.batch

    def __call__(self, page: list[WireEvent]) -> bytes:
        known = self._known_of(page)
        if known.json is None:
            known.json = orjson.dumps(page)
        return known.json

    def _known_of(self, page: list[WireEvent]) -> _Known:
        known = self._known.get(id(page))
        if known is None or known.page is not page:
            known = self._known[id(page)] = _Known(page)
            if len(self._known) > self.size:
                self._known.popitem(last=False)
        return known


class _Known:
    __slots__ = ("batch", "json", "page")

    def __init__(self, page: list[WireEvent]) -> None:
        self.page = page
        self.batch: Batch | None = None
        self.json: bytes | None = None


Send = Callable[[str, str, list[WireEvent], Page | None], None]
# (sids, topic, events): the recovery offset of a frame of `events` to these connections
Mark = Callable[[list[str], str, list[WireEvent]], str | None]


class CatchUp:
    def __init__(
        self,
        history: HistoryReader,
        subs: Subscriptions,
        metrics: WebMetrics,
        *,
        send: Send,
        disconnect: Callable[[str], Awaitable[None]],
        caught_up: Callable[[str], None],
        mark: Mark | None = None,
    ) -> None:
        """`send(sid, topic, events, page)`: hand backlog events to a connection;
        `disconnect(sid)`: drop a connection whose gap history cannot fill (the client
        reconnects and is told `recovered: false`); `caught_up(sid)`: it is live."""
        self.history = history
        self.subs = subs
        self.metrics = metrics
        self.send = send
        self.disconnect = disconnect
        self.caught_up = caught_up
        self.mark = mark
        self.json = PageJson()

    async def catch_up(self, topic: str, targets: list[Target]) -> None:
        """Subscriptions that may have missed events: from history if it still holds
        everything after their position, else their connection is dropped."""
        extent = await self.retrying(functools.partial(self.history.extent, topic))
        kept = []
        for target in targets:
            if target.last is not None and covers(extent, target.last, self.history.maxlen):
                kept.append(target)
            else:
                logger.warning("subscription to %s cannot catch up; dropping its connection", topic)
                self.metrics.disconnects.labels("gap").inc()
                await self.disconnect(target.sid)
        await self.backlog(topic, kept, None)
        for target in kept:
            self.caught_up(target.sid)

    async def backlog(
        self, topic: str, targets: Sequence[Target], page: list[WireEvent] | None
    ) -> None:
        """Send `page` (or history read after the targets' positions), more pages while
        there are, then each target's buffered live events, and let them go live."""
        pending = list(targets)
        while pending:
            if page is None:
                start = min((self.subs.last(t.sid, topic) or ZERO for t in pending), default=ZERO)
                read = functools.partial(self.history.after, topic, start, PAGE)
                page = await self.retrying(read)
            batch = self.json.batch(topic, page)
            outs = [(t.sid, self.subs.replayed(t.sid, t.generation, batch)) for t in pending]
            whole = [sid for sid, out in outs if out and out is page]
            offset = self.mark(whole, topic, page) if whole and self.mark is not None else None
            encoded = Page(page, offset, self.json(page) if whole else None)
            for sid, out in outs:
                self.send(sid, topic, out, encoded)
            if len(page) >= PAGE:
                page = None
                continue
            unfinished = []
            for target in pending:
                out, done = self.subs.finish(target.sid, topic, target.generation)
                self.send(target.sid, topic, out, None)
                if not done:
                    unfinished.append(target)
            pending, page = unfinished, None

    async def retrying(self, read: Callable[[], Awaitable[T]]) -> T:
        """A history read, retried with backoff until Redis answers (the subscriptions
        wait in their backlog phase meanwhile; nothing is lost)."""
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        while True:
            try:
                return await read()
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                logger.warning("history unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
