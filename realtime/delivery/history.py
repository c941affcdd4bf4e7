"""Topic history, the reading side: replay after a position, the latest events, and
whether history still covers a position.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from realtime.core import jsoncodec
from realtime.core.keys import HISTORY_DATA_FIELD as DATA_FIELD
from realtime.core.keys import HISTORY_TS_FIELD as TS_FIELD
from realtime.core.keys import Keys
from realtime.core.streamids import ZERO, StreamId, format_id, parse_id

WireEvent = dict[str, Any]
RawEntry = tuple[bytes | str, Mapping[bytes, bytes]]


def decode_event(topic: str, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> WireEvent:
    """A history entry as clients receive it inside an `update` list."""
    event_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return {
        "topic": topic,
        "id": event_id,
        "ts": int(fields[TS_FIELD.encode()]),
        "data": jsoncodec.loads(fields[DATA_FIELD.encode()]),
    }


@dataclass(frozen=True)
class Extent:
    """What a topic's history holds: its oldest entry and its length."""

    oldest: StreamId | None
    length: int


def covers(extent: Extent, since: StreamId, maxlen: int) -> bool:
    """Whether history still holds every event after `since` (pure; see the module
    docstring)."""
    if since == ZERO:
        return extent.length < maxlen
    return extent.oldest is not None and extent.oldest <= since


@dataclass
class ResumePoint:
    recovered: bool
    page: list[WireEvent]  # the first events after `since` (empty when not recovered)
    latest: list[WireEvent]  # the newest events, oldest first (for a snapshot)


class HistoryReader:
    def __init__(self, redis: Redis, keys: Keys, maxlen: int) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen

    def _decode(self, topic: str, entries: Sequence[RawEntry]) -> list[WireEvent]:
        return [decode_event(topic, i, f) for i, f in entries]

    async def resume(self, topic: str, since: StreamId, count: int, latest: int) -> ResumePoint:
        """Whether history covers `since`, the first `count` events after it and the
        newest `latest` events, read in one transaction so they agree."""
        key = self.keys.topic(topic)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrange(key, count=1)
            pipe.xlen(key)
            pipe.xrange(key, min=f"({format_id(since)}", count=count)
            pipe.xrevrange(key, count=latest)
            oldest_entries, length, page, newest = await pipe.execute()
        oldest = parse_id(oldest_entries[0][0]) if oldest_entries else None
        recovered = covers(Extent(oldest, int(length)), since, self.maxlen)
        return ResumePoint(
            recovered,
            self._decode(topic, page) if recovered else [],
            self._decode(topic, newest[::-1]),
        )

    async def after(self, topic: str, after: StreamId, count: int) -> list[WireEvent]:
        """Up to `count` events after `after`, oldest first."""
        page: Any = await self.redis.xrange(
            self.keys.topic(topic), min=f"({format_id(after)}", count=count
        )
        return self._decode(topic, page)

    async def range(
        self, topic: str, start: StreamId, end: StreamId, count: int, *, descending: bool
    ) -> tuple[list[WireEvent], Extent]:
        """Up to `count` events from `start` to `end` (both inclusive), oldest or newest
        first, and what history holds, read in one transaction so they agree."""
        key = self.keys.topic(topic)
        low, high = format_id(start), format_id(end)
        async with self.redis.pipeline(transaction=True) as pipe:
            if descending:
                pipe.xrevrange(key, max=high, min=low, count=count)
            else:
                pipe.xrange(key, min=low, max=high, count=count)
            pipe.xrange(key, count=1)
            pipe.xlen(key)
            page, oldest_entries, length = await pipe.execute()
        oldest = parse_id(oldest_entries[0][0]) if oldest_entries else None
        return self._decode(topic, page), Extent(oldest, int(length))

    async def extent(self, topic: str) -> Extent:
        key = self.keys.topic(topic)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrange(key, count=1)
            pipe.xlen(key)
            oldest_entries, length = await pipe.execute()
        return Extent(parse_id(oldest_entries[0][0]) if oldest_entries else None, int(length))

    async def latest(self, topic: str, count: int) -> list[WireEvent]:
        """The newest `count` events, oldest first."""
        entries: Any = await self.redis.xrevrange(self.keys.topic(topic), count=count)
        return self._decode(topic, entries[::-1])
