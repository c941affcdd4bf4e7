"""SSE readers, a step of delivery: each `GET /api/v1/stream` reader follows its topics
from a position per topic, replayed from history and then live, with no gap and no
duplicate at the seam: the same order as `subscribe {since}` in `hub.py`. Live events of
a topic are held from the moment the reader joins it; its channel is confirmed; history
is read after the reader's position, page by page; then what was held goes out, less
whatever history already gave (ids only grow per topic). The same hold-read-release
runs again for every reader when the fan-out listener has reconnected (`catch_up`).

With `max_rate`, a reader's events of each topic are merged and paced as a `subscribe`
with `max_rate` has them (`realtime.delivery.pacing`), except a snapshot, sent whole.

A reader's unsent bytes are bounded (REALTIME_CLIENT_BACKLOG_BYTES): past the bound it is
cut (`cut` is set and its stream ends); it resumes from its last `id:` like any other.

A reader counts as a viewer of each of its topics in presence (`members`, read by the
hub's `_interest`, which tells `presence.py`), as a subscribed connection does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from redis.exceptions import RedisError

from realtime.core import sse
from realtime.core.metrics import WebMetrics
from realtime.core.streamids import ZERO, StreamId, before, format_id, parse_id
from realtime.delivery.catch_up import PAGE
from realtime.delivery.conflate import Conflater
from realtime.delivery.history import HistoryReader, WireEvent, reaches
from realtime.delivery.pacing import Pacing
from realtime.fanout.channels import ChannelListener

logger = logging.getLogger(__name__)

SLOW = "slow"  # why a stream ends: its reader fell behind the bound
UNAVAILABLE = "unavailable"  # history could not be read
CLOSED = "closed"  # the stream is over
HELD_LIMIT = 1000  # live events held per topic during its backlog; past it, re-read history


@dataclass(frozen=True, slots=True)
class LiveBatch:
    """One topic's live events as every reader of it needs them, made once per batch:
    each id parsed and formatted, each `data:` line encoded. Only the `id:` line (the
    reader's own position) is made per reader."""

    events: list[WireEvent]
    ids: list[StreamId]
    id_texts: list[str]
    data_lines: list[bytes]

    @classmethod
    def of(cls, events: list[WireEvent]) -> LiveBatch:
        ids = [parse_id(event["id"]) for event in events]
        return cls(
            events,
            ids,
            [format_id(i) for i in ids],
            [sse.data_line(event) for event in events],
        )


class StreamReader:
    """One SSE reader's state: its position per topic and its unsent messages."""

    def __init__(self, bound_bytes: int, max_rate: float | None = None) -> None:
        self.bound_bytes = bound_bytes
        # `max_rate`: every topic's events are merged and paced, as `subscribe` does it
        self.max_rate = max_rate
        self._conflaters: dict[str, Conflater] = {}
        self._pacing = _ReaderPacing(self) if max_rate is not None else None
        self.cursors: dict[str, StreamId] = {}  # topic -> last id sent (or the start)
        self._held: dict[str, list[WireEvent]] = {}  # topics whose backlog is being read
        # held topics the fan-out may have missed events of meanwhile (a reconnect)
        self.stale: set[str] = set()
        self._out: deque[bytes] = deque()
        self._size = 0
        self.wake = asyncio.Event()  # something was queued
        self.ended = asyncio.Event()  # `cut` is set
        self.cut: str | None = None  # why the stream must end (SLOW, ...), once it must
        self._taken = asyncio.Event()
        self._taken.set()
        self.task: asyncio.Task[None] | None = None  # the rest of the backlog, if any

    def position(self) -> str:
        return sse.encode_position(self.cursors)

    def hold(self, topic: str) -> None:
        self._held.setdefault(topic, [])

    def holding(self, topic: str) -> bool:
        return topic in self._held

    def held_topics(self) -> list[str]:
        return list(self._held)

    def release(self, topic: str) -> None:
        """The backlog of `topic` is sent: what was held goes out, then live events."""
        self.send(topic, self._held.pop(topic, []))

    def offer(self, topic: str, events: list[WireEvent] | LiveBatch) -> None:
        """Live events of one topic, in id order."""
        batch = events if isinstance(events, LiveBatch) else LiveBatch.of(events)
        held = self._held.get(topic)
        if held is not None:
            if topic in self.stale:
                return  # history is read again after the backlog: it has these
            held += batch.events
            if len(held) > HELD_LIMIT:  # a long replay: bounded memory, read them later
                held.clear()
                self.stale.add(topic)
        elif self._pacing is not None:
            self.send(topic, batch.events)
        else:
            self._send_live(topic, batch)

    def _send_live(self, topic: str, batch: LiveBatch) -> None:
        """`send` for an unpaced live batch, as one write: the same messages, with the
        work shared by every reader of the batch done once (`LiveBatch`)."""
        if self.cut is not None:
            return
        last = self.cursors.get(topic, ZERO)
        ids = batch.ids
        first = 0
        while first < len(ids) and ids[first] <= last:
            first += 1  # duplicates at the seam (ids only grow within a batch)
        if first == len(ids):
            return
        # The position names every topic in name order; only this topic's part moves.
        head, tail = f"event: {sse.UPDATE}\nid: ", "\n"
        for other in sorted(self.cursors):
            if other < topic:
                head += f"{other}={format_id(self.cursors[other])},"
            elif other > topic:
                tail = f",{other}={format_id(self.cursors[other])}" + tail
        head += f"{topic}="
        texts, lines = batch.id_texts, batch.data_lines
        self.cursors[topic] = ids[-1]
        self._queue(
            b"".join(f"{head}{texts[i]}{tail}".encode() + lines[i] for i in range(first, len(ids)))
        )

    def send(
        self,
        topic: str,
        events: Iterable[WireEvent],
        *,
        backlog: bool = False,
        whole: bool = False,
    ) -> None:
        """Queue the events after the topic's position, each as an `update` message
        (with `max_rate`, merged and paced, unless `whole`: a snapshot is not merged).
        A backlog page is queued even past the bound (its size is about a page)."""
        if self.cut is not None:
            return
        paced = self._pacing is not None and not whole
        last = self.cursors.get(topic, ZERO)
        new = []
        for event in events:
            event_id = parse_id(event["id"])
            if event_id <= last:
                continue  # a duplicate at the seam
            last = event_id
            if paced:
                new.append(event)
            else:
                self.cursors[topic] = event_id
                self._queue(sse.message(sse.UPDATE, event, self.position()), backlog)
        if new and self._pacing is not None and self.max_rate is not None:
            conflater = self._conflaters.get(topic)
            if conflater is None:
                conflater = self._conflaters[topic] = Conflater(topic, self.max_rate)
            self.sent(topic, self._pacing.offer(topic, conflater, new), backlog)

    def sent(self, topic: str, events: list[WireEvent], backlog: bool = False) -> None:
        """Queue paced events as they are (merges, ids after the topic's position)."""
        for event in events:
            self.cursors[topic] = parse_id(event["id"])
            self._queue(sse.message(sse.UPDATE, event, self.position()), backlog)

    def ranged(self, topic: str, start: int, complete: bool) -> None:
        """Say where a replay from a time starts: `start`, if history reaches it, else
        the time of the oldest event it holds after it (`complete: false`)."""
        data = {"topic": topic, "from": start, "complete": complete}
        self._queue(sse.message(sse.RANGE, data, self.position()))

    def gap(self, topic: str, since: StreamId, newest: StreamId) -> None:
        """History no longer holds the events after `since`: say so, go on from `newest`."""
        self.cursors[topic] = newest
        data = {"topic": topic, "since": format_id(since), "resumed_after": format_id(newest)}
        self._queue(sse.message(sse.GAP, data, self.position()))

    def write(self, data: bytes) -> None:
        """Anything else for the stream (the start position, a heartbeat)."""
        self._queue(data)

    def _queue(self, data: bytes, backlog: bool = False) -> None:
        if self.cut is not None:
            return  # the stream ends: nothing more is held for it
        self._out.append(data)
        self._size += len(data)
        self._taken.clear()
        if self._size > self.bound_bytes and not backlog:
            self.end(SLOW)
        self.wake.set()

    def end(self, reason: str) -> None:
        """The stream must end; nothing more is queued."""
        if self.cut is None:
            self.cut = reason
        if self._pacing is not None:
            self._pacing.close()
        self.ended.set()
        self._out.clear()
        self._size = 0
        self._taken.set()
        self.wake.set()

    async def taken(self) -> None:
        """Return once everything queued was taken to be written."""
        await self._taken.wait()

    def take(self) -> bytes:
        """Everything queued, as one write."""
        data = b"".join(self._out)
        self._out.clear()
        self._size = 0
        self.wake.clear()
        self._taken.set()
        return data


class _ReaderPacing(Pacing[str]):
    """A `max_rate` reader's timers, by topic: a pending merge goes out when due."""

    def __init__(self, reader: StreamReader) -> None:
        super().__init__()
        self.reader = reader

    def send_due(self, key: str, conflater: Conflater) -> bool:
        if self.reader.cut is not None:
            return False
        self.reader.sent(key, conflater.flush(asyncio.get_running_loop().time()))
        return True


@dataclass(frozen=True)
class _First:
    """What a topic's backlog starts with (see `StreamReaders.open`)."""

    topic: str
    start: StreamId  # the position the stream starts after
    page: list[WireEvent]  # the first events after it
    complete: bool = False  # no more after `page` (a snapshot)
    gap_since: StreamId | None = None  # history no longer holds what came after this
    range_from: tuple[int, bool] | None = None  # `from`: where the replay starts, complete


class StreamReaders:
    """The instance's SSE readers by topic, fed by the hub's live batches."""

    def __init__(
        self,
        history: HistoryReader,
        channels: ChannelListener,
        metrics: WebMetrics,
        interest: Callable[[str], None],
    ) -> None:
        self.history = history
        self.channels = channels
        self.metrics = metrics
        self.interest = interest  # re-decide whether to listen on a topic's channel
        self._by_topic: dict[str, set[StreamReader]] = {}
        self._readers: set[StreamReader] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def count(self) -> int:
        return len(self._readers)

    def members(self, topic: str) -> int:
        return len(self._by_topic.get(topic, ()))

    def live(self, topic: str, events: list[WireEvent]) -> None:
        readers = self._by_topic.get(topic, ())
        if not readers:
            return
        batch = LiveBatch.of(events)
        for reader in readers:
            reader.offer(topic, batch)
        self.metrics.events_delivered.labels("live").inc(len(events) * len(readers))

    async def open(
        self,
        reader: StreamReader,
        starts: dict[str, StreamId | None],
        snapshot: int = 0,
        ranged: Mapping[str, int] | None = None,
    ) -> None:
        """Join each topic from its start (None: from now, after `snapshot` newest events)
        and queue the first page of its backlog; the rest follows page by page as the
        reader takes what is queued (`reader.task`). `ranged`: topics replayed from a
        time (epoch ms; their start is just before it), which history may not reach.
        Raises RedisError/OSError when history cannot be read (the reader is then
        closed)."""
        self._readers.add(reader)
        for topic in starts:
            reader.hold(topic)
            self._by_topic.setdefault(topic, set()).add(reader)
            self.interest(topic)
        try:
            firsts = []
            for topic, since in starts.items():
                await self.channels.ready(topic)
                start = None if ranged is None else ranged.get(topic)
                firsts.append(await self._first(topic, since, snapshot, start))
        except BaseException:
            self.close(reader)
            raise
        # Every topic's start is known before anything is queued: each `id:` names all.
        for first in firsts:
            reader.cursors[first.topic] = first.start
        more = [first.topic for first in firsts if self._begin(reader, first)]
        if more:
            reader.task = asyncio.create_task(self._rest(reader, more))

    async def _first(
        self, topic: str, since: StreamId | None, snapshot: int, start: int | None = None
    ) -> _First:
        """Where the topic starts and the first page of its backlog, read from history."""
        if since is None:
            latest = await self.history.latest(topic, max(snapshot, 1))
            newest = parse_id(latest[-1]["id"]) if latest else ZERO
            if not (snapshot and latest):
                return _First(topic, newest, [])
            page = latest[-snapshot:]
            return _First(topic, before(parse_id(page[0]["id"])), page, complete=True)
        point = await self.history.resume(topic, since, PAGE, 1)
        if start is not None:  # everything held from `start` on, whole or not
            complete = reaches(point.extent, (start, 0), self.history.maxlen)
            first = start if complete or not point.page else parse_id(point.page[0]["id"])[0]
            return _First(topic, since, point.page, range_from=(first, complete))
        if not point.recovered:
            newest = parse_id(point.latest[-1]["id"]) if point.latest else since
            return _First(topic, newest, [], gap_since=since)
        return _First(topic, since, point.page)

    def _begin(self, reader: StreamReader, first: _First) -> bool:
        """Queue the topic's first page (or its gap); True if there may be more."""
        if first.gap_since is not None:
            reader.gap(first.topic, first.gap_since, first.start)
        if first.range_from is not None:
            reader.ranged(first.topic, *first.range_from)
        if first.complete or first.gap_since is not None:
            reader.send(first.topic, first.page, backlog=True, whole=True)  # a snapshot
            self._release(reader, first.topic)
            return False
        return self._page(reader, first.topic, first.page)

    def _page(self, reader: StreamReader, topic: str, page: list[WireEvent]) -> bool:
        """Queue a page of history; the last one (or a cut) releases what was held, with
        no await since its read: nothing slips between. True: read another."""
        reader.send(topic, page, backlog=True)
        self.metrics.events_delivered.labels("backlog").inc(len(page))
        if len(page) < PAGE or reader.cut is not None:
            self._release(reader, topic)
            return False
        return True

    def _release(self, reader: StreamReader, topic: str) -> None:
        """Send what was held, unless the fan-out listener reconnected while the topic's
        backlog was read: then history is read again after what was sent first."""
        if topic in reader.stale and reader.cut is None:
            reader.stale.discard(topic)
            self._spawn_catch_up(reader, topic)
        else:
            reader.release(topic)

    async def _rest(self, reader: StreamReader, topics: list[str]) -> None:
        """The backlog's further pages, each once the reader has taken the one before
        (its memory stays about a page), so a long replay is not taken for a slow reader."""
        try:
            for topic in topics:
                await self._pages(reader, topic)
        except (RedisError, OSError) as exc:  # the reader resumes by itself
            logger.warning("SSE backlog unavailable (%s); ending the stream", exc)
            reader.end(UNAVAILABLE)

    async def _pages(self, reader: StreamReader, topic: str) -> None:
        """History after the reader's position on `topic`, a page at a time, each once
        the reader has taken the one before."""
        more = True
        while more:
            await reader.taken()
            page = await self.history.after(topic, reader.cursors[topic], PAGE)
            more = self._page(reader, topic, page)

    def close(self, reader: StreamReader) -> None:
        if reader.task is not None:
            reader.task.cancel()
        reader.end(CLOSED)  # a catch-up still running for it stops
        self._readers.discard(reader)
        for topic, readers in list(self._by_topic.items()):
            if reader in readers:
                readers.discard(reader)
                if not readers:
                    del self._by_topic[topic]
                self.interest(topic)

    def catch_up(self) -> None:
        """The fan-out listener (re)subscribed: what was published meanwhile is read
        from history for every reader, live events held until it is sent."""
        for reader in list(self._readers):
            for topic in list(reader.cursors):
                if reader.holding(topic):
                    reader.stale.add(topic)  # read again once its backlog is sent
                    continue
                reader.hold(topic)
                self._spawn_catch_up(reader, topic)
            for topic in reader.held_topics():
                reader.stale.add(topic)

    def _spawn_catch_up(self, reader: StreamReader, topic: str) -> None:
        task = asyncio.create_task(self._catch_up(reader, topic))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, reader: StreamReader, topic: str) -> None:
        try:
            await self._pages(reader, topic)
        except (RedisError, OSError) as exc:  # the reader resumes by itself
            logger.warning("SSE catch-up of %s failed (%s); ending the stream", topic, exc)
            reader.end(UNAVAILABLE)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
