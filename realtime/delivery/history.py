"""Topic history, the reading side: replay after a position, the latest events, and
whether history still covers a position.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from realtime.core import jsoncodec
from realtime.core.keys import HISTORY_DATA_FIELD as DATA_FIELD
from realtime.core.keys import HISTORY_TS_FIELD as TS_FIELD
from realtime.core.keys import Keys
from realtime.core.streamids import ZERO, StreamId, before, format_id, parse_id
from realtime.delivery.coalesce import Coalesced

WireEvent = dict[str, Any]
# An entry as redis-py parses it (fields as a dict) or as Redis sends it (`Raw`: fields
# as a flat list of names and values).
RawEntry = tuple[bytes | str, Mapping[bytes, bytes] | Sequence[bytes]]

# A subscribe's reads (resumes, snapshots) go at most once per 5 ms: under a connect
# storm each then serves the subscribes of those 5 ms (`coalesce.py`); a subscribe on a
# quiet server is read at once.
GATHER_S = 0.005

_TS = TS_FIELD.encode()
_DATA = DATA_FIELD.encode()
# XRANGE and XREVRANGE replies taken as Redis sends them: redis-py's parse (a dict per
# entry, `pairs_to_dict`) was a fifth of a reconnect storm's history reads.
_RAW_REPLIES = ("XRANGE", "XREVRANGE")


def decode_event(topic: str, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> WireEvent:
    """A history entry as clients receive it inside an `update` list."""
    event_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return {
        "topic": topic,
        "id": event_id,
        "ts": int(fields[_TS]),
        "data": jsoncodec.loads(fields[_DATA]),
    }


def _ts_and_data(fields: Mapping[bytes, bytes] | Sequence[bytes]) -> tuple[bytes, bytes]:
    """An entry's `ts` and `data`, its fields parsed by redis-py or as sent (a KeyError
    if one is missing, as `decode_event` raises)."""
    if isinstance(fields, Mapping):
        return fields[_TS], fields[_DATA]
    if len(fields) == 4 and fields[0] == _TS and fields[2] == _DATA:  # as the worker writes
        return fields[1], fields[3]
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    return pairs[_TS], pairs[_DATA]


class Decoded:
    """History entries decoded once: a connect storm reads the same newest entries of a
    handful of topics thousands of times (snapshots, resumes), and decoding them (JSON
    included) was most of what those reads cost the web. An entry's event is reused
    only while its `ts` and `data` bytes are the ones it was decoded from (a stream
    deleted and written again with the same ids gets new events), and the decoded
    entries are bounded by their `data` bytes (oldest decoded dropped first).

    The events are shared by every read that returns them: read them, never change them."""

    def __init__(self, budget_bytes: int = 8 * 1024 * 1024) -> None:
        self.budget_bytes = budget_bytes
        self._held = 0  # data bytes of the entries held
        self._events: OrderedDict[tuple[str, bytes | str], tuple[bytes, bytes, WireEvent]] = (
            OrderedDict()
        )

    def __call__(self, topic: str, entries: Sequence[RawEntry]) -> list[WireEvent]:
        events = self._events
        out = []
        for entry_id, fields in entries:
            ts, data = _ts_and_data(fields)
            known = events.get((topic, entry_id))
            if known is not None and known[1] == data and known[0] == ts:
                out.append(known[2])
                continue
            event = decode_event(topic, entry_id, {_TS: ts, _DATA: data})
            self._keep((topic, entry_id), ts, data, event)
            out.append(event)
        return out

    def _keep(self, key: tuple[str, bytes | str], ts: bytes, data: bytes, event: WireEvent) -> None:
        old = self._events.pop(key, None)
        if old is not None:
            self._held -= len(old[1])
        self._events[key] = (ts, data, event)
        self._held += len(data)
        while self._held > self.budget_bytes and self._events:
            _, (_, dropped, _) = self._events.popitem(last=False)
            self._held -= len(dropped)

    def __len__(self) -> int:
        return len(self._events)


def raw_callbacks(pipe: Any) -> Any:
    """A pipeline's response callbacks without those of XRANGE and XREVRANGE."""
    callbacks = pipe.response_callbacks.copy()
    for name in _RAW_REPLIES:
        callbacks.pop(name, None)
    return callbacks


@dataclass(frozen=True)
class Extent:
    """What a topic's history holds: its oldest entry, its length and (Redis 7 and
    later) how many entries were ever added to it."""

    oldest: StreamId | None
    length: int
    added: int | None = None


def covers(extent: Extent, since: StreamId, maxlen: int) -> bool:
    """Whether history still holds every event after `since` (pure).

    Trimming (by count or by time) removes the oldest entries, so it does when the
    oldest entry held is at or before `since`. `ZERO` (the topic was empty when the
    client subscribed): when nothing was ever removed, which Redis 7 counts (entries
    added == length); Redis 6.2 does not, so there only while the count cap was never
    reached, which time trimming can miss (docs/pipelines.md#retention)."""
    if since == ZERO:
        if extent.added is not None:
            return extent.added == extent.length
        return extent.length < maxlen
    return extent.oldest is not None and extent.oldest <= since


def reaches(extent: Extent, start: StreamId, maxlen: int) -> bool:
    """Whether history holds every event from `start` on (inclusive): nothing was ever
    removed, or everything after the position before `start` is held (pure)."""
    if extent.added is not None and extent.added == extent.length:
        return True
    return covers(extent, before(start), maxlen)


def _extent(info: Any) -> Extent:
    """The reply of `_ask_extent`, queued in a transaction, as an Extent."""
    if isinstance(info, ResponseError):  # no such key: nothing was ever added
        return Extent(None, 0, 0)
    first = info.get("first-entry")
    oldest = parse_id(first[0]) if first else None
    added = info.get("entries-added")  # None before Redis 7
    return Extent(oldest, int(info["length"]), None if added is None else int(added))


def _ask_extent(pipe: Any, key: str) -> None:
    """Queue the read `_extent` takes: XINFO STREAM has the stream's length and oldest
    entry (an XRANGE and an XLEN besides it were two more commands in each resume of a
    connect storm). It fails on a missing key: the transaction is executed with
    `raise_on_error=False`."""
    pipe.xinfo_stream(key)


async def _execute(pipe: Any) -> list[Any]:
    """Run a transaction whose only expected failure is XINFO STREAM on a missing key
    (answered as no info); any other error is raised."""
    replies: list[Any] = await pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, ResponseError) and "no such key" not in str(reply):
            raise reply
    return replies


@dataclass
class ResumePoint:
    recovered: bool
    page: list[WireEvent]  # the first events after `since` (what history still holds)
    latest: list[WireEvent]  # the newest events, oldest first (for a snapshot)
    extent: Extent  # what history held when it was read


class HistoryReader:
    """The reads of a topic's history. `resume`, `after` and `latest` asked for with the
    same arguments in one turn of the event loop share one read (`coalesce.py`: a
    connect storm's subscribes); what they return is shared: read it, do not change it."""

    def __init__(self, redis: Redis, keys: Keys, maxlen: int) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen
        self._decode = Decoded()
        # (topic, since, count) -> the page a resume read last returned for it
        self._pages: OrderedDict[tuple[str, StreamId, int], list[WireEvent]] = OrderedDict()
        self._raw: Any = None  # `raw_callbacks` of this client's pipelines, made once
        # Reads of several topics in one turn go in one round trip, but in a cluster,
        # where their keys may live on different shards.
        single = keys.cluster
        self._resume = Coalesced(self._read_resume, None if single else self._resume_many, GATHER_S)
        # Not gathered: a catch-up reads its pages one after the other.
        self._after = Coalesced(self._read_after, None if single else self._after_many)
        self._latest = Coalesced(self._read_latest, None if single else self._latest_many, GATHER_S)

    def _pipeline(self, transaction: bool) -> Any:
        """A pipeline whose XRANGE and XREVRANGE replies are not parsed by redis-py
        (each entry's fields stay a flat list, which `Decoded` reads as it is). Another
        kind of pipeline (a cluster's) parses them as usual, which `Decoded` reads too."""
        pipe = self.redis.pipeline(transaction=transaction)
        if isinstance(pipe, Pipeline):
            if self._raw is None:
                self._raw = raw_callbacks(pipe)
            pipe.response_callbacks = self._raw
        return pipe

    async def resume(self, topic: str, since: StreamId, count: int, latest: int) -> ResumePoint:
        """Whether history covers `since`, the first `count` events after it and the
        newest `latest` events, read in one transaction so they agree."""
        point = await self._resume((topic, since, count), latest)
        if len(point.latest) <= latest:
            return point
        newest = point.latest[len(point.latest) - latest :]
        return ResumePoint(point.recovered, point.page, newest, point.extent)

    async def _read_resume(self, asked: tuple[str, StreamId, int], latest: int) -> ResumePoint:
        return (await self._resume_many([(asked, latest)]))[0]

    async def _resume_many(
        self, asked: list[tuple[tuple[str, StreamId, int], int]]
    ) -> list[ResumePoint]:
        """`_read_resume` of several topics, in one transaction."""
        async with self._pipeline(transaction=True) as pipe:
            for (topic, since, count), latest in asked:
                key = self.keys.topic(topic)
                pipe.xrange(key, min=f"({format_id(since)}", count=count)
                pipe.xrevrange(key, count=latest)
                _ask_extent(pipe, key)
            replies = await _execute(pipe)
        points = []
        for i, (read, _) in enumerate(asked):
            page, newest, info = replies[3 * i : 3 * i + 3]
            extent = _extent(info)
            points.append(
                ResumePoint(
                    covers(extent, read[1], self.maxlen),
                    self._same_page(read, self._decode(read[0], page)),
                    self._decode(read[0], newest[::-1]),
                    extent,
                )
            )
        return points

    def _same_page(self, key: tuple[str, StreamId, int], page: list[WireEvent]) -> list[WireEvent]:
        """The page this resume returned last time if it holds the very same events
        (`Decoded` gives an entry's event again only while its bytes are the same): the
        reads of a storm's reconnects return one page object, so its replay's JSON is
        made once for all of them (`catch_up.PageJson`), not once per read."""
        last = self._pages.pop(key, None)
        if last is not None and len(last) == len(page) and all(map(operator.is_, last, page)):
            page = last
        if page:
            self._pages[key] = page
            if len(self._pages) > 256:
                self._pages.popitem(last=False)
        return page

    async def after(self, topic: str, after: StreamId, count: int) -> list[WireEvent]:
        """Up to `count` events after `after`, oldest first."""
        page = await self._after((topic, after), count)
        return page[:count] if len(page) > count else page

    async def _read_after(self, asked: tuple[str, StreamId], count: int) -> list[WireEvent]:
        # A pipeline of one command: its reply is not parsed by redis-py (`_pipeline`).
        return (await self._after_many([(asked, count)]))[0]

    async def _after_many(
        self, asked: list[tuple[tuple[str, StreamId], int]]
    ) -> list[list[WireEvent]]:
        async with self._pipeline(transaction=False) as pipe:
            for (topic, after), count in asked:
                pipe.xrange(self.keys.topic(topic), min=f"({format_id(after)}", count=count)
            pages = await pipe.execute()
        return [
            self._decode(topic, page) for ((topic, _), _), page in zip(asked, pages, strict=True)
        ]

    async def range(
        self, topic: str, start: StreamId, end: StreamId, count: int, *, descending: bool
    ) -> tuple[list[WireEvent], Extent]:
        """Up to `count` events from `start` to `end` (both inclusive), oldest or newest
        first, and what history holds, read in one transaction so they agree."""
        key = self.keys.topic(topic)
        low, high = format_id(start), format_id(end)
        async with self._pipeline(transaction=True) as pipe:
            if descending:
                pipe.xrevrange(key, max=high, min=low, count=count)
            else:
                pipe.xrange(key, min=low, max=high, count=count)
            _ask_extent(pipe, key)
            page, info = await _execute(pipe)
        return self._decode(topic, page), _extent(info)

    async def extent(self, topic: str) -> Extent:
        key = self.keys.topic(topic)
        async with self._pipeline(transaction=True) as pipe:
            _ask_extent(pipe, key)
            (info,) = await _execute(pipe)
            return _extent(info)

    async def latest(self, topic: str, count: int) -> list[WireEvent]:
        """The newest `count` events, oldest first."""
        newest = await self._latest(topic, count)
        return newest[len(newest) - count :] if len(newest) > count else newest

    async def _read_latest(self, topic: str, count: int) -> list[WireEvent]:
        return (await self._latest_many([(topic, count)]))[0]  # as `_read_after`

    async def _latest_many(self, asked: list[tuple[str, int]]) -> list[list[WireEvent]]:
        async with self._pipeline(transaction=False) as pipe:
            for topic, count in asked:
                pipe.xrevrange(self.keys.topic(topic), count=count)
            replies = await pipe.execute()
        return [
            self._decode(topic, entries[::-1])
            for (topic, _), entries in zip(asked, replies, strict=True)
        ]
