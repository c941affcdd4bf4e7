"""Dead letters: ingest entries the worker gave up on, kept with their error in `rt:dead`
(one stream per partition on a Redis Cluster).

An entry is dead-lettered when it can never be processed (malformed), when processing
it failed `REALTIME_MAX_ATTEMPTS` times in a row, or when it has been handed to workers
`REALTIME_MAX_ATTEMPTS` times without ever completing (it crashes them). The record is
written by the same atomic commit that acknowledges the entry: the partition moves on
and nothing is silently dropped. `realtime dlq list|replay|drop` works on this stream.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from processors.worker.slots import slot_of
from realtime.core.keys import Keys
from realtime.core.streamids import parse_id
from realtime.core.text import text
from realtime.core.topics import is_valid_topic, partition_of

ENTRY_PREFIX = "entry."
MAX_ERROR_CHARS = 2000


def dead_letter_record(
    stream: str,
    entry_id: str,
    fields: Mapping[bytes | str, bytes | str],
    error: str,
    attempts: int,
    now_ms: int | None = None,
) -> list[bytes | str | int]:
    """The field/value list of a record in `rt:dead`."""
    at = int(time.time() * 1000) if now_ms is None else now_ms
    record: list[bytes | str | int] = [
        "stream", stream,
        "id", entry_id,
        "error", error[:MAX_ERROR_CHARS],
        "attempts", attempts,
        "at", at,
    ]  # fmt: skip
    for name, value in fields.items():
        record += [ENTRY_PREFIX + text(name, "replace"), value]
    return record


@dataclass(frozen=True)
class DeadLetter:
    id: str  # the record's id in rt:dead
    stream: str
    entry_id: str
    error: str
    attempts: int
    at: int
    fields: dict[str, bytes]

    @classmethod
    def from_record(cls, record_id: bytes | str, raw: Mapping[bytes, bytes]) -> DeadLetter:
        values = {text(k, "replace"): v for k, v in raw.items()}

        def number(name: str) -> int:
            try:
                return int(values.get(name, b"0"))
            except ValueError:
                return 0

        return cls(
            id=text(record_id, "replace"),
            stream=text(values.get("stream", b""), "replace"),
            entry_id=text(values.get("id", b""), "replace"),
            error=text(values.get("error", b""), "replace"),
            attempts=number("attempts"),
            at=number("at"),
            fields={
                k.removeprefix(ENTRY_PREFIX): v
                for k, v in values.items()
                if k.startswith(ENTRY_PREFIX)
            },
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stream": self.stream,
            "entry_id": self.entry_id,
            "error": self.error,
            "attempts": self.attempts,
            "at": self.at,
            "entry": {k: text(v, "replace") for k, v in self.fields.items()},
        }


class DeadLetterStore:
    """Read, re-queue and drop dead letters (the `realtime dlq` command).

    One stream `rt:dead`, or on a Redis Cluster one per partition (in the partition's
    hash slot, so the commit can write it): read together, oldest record id first."""

    def __init__(self, redis: Redis, keys: Keys, partitions: int) -> None:
        self.redis = redis
        self.keys = keys
        self.streams = keys.dead_letter_streams()
        self.key = self.streams[0] if len(self.streams) == 1 else f"{keys.prefix}dead:{{*}}"
        self.partitions = partitions
        # A record's stream is the dead-letter stream in its origin stream's slot.
        self._by_slot = {slot_of(stream): stream for stream in self.streams}

    def _stream_of(self, letter: DeadLetter) -> str:
        if len(self.streams) == 1:
            return self.streams[0]
        return self._by_slot.get(slot_of(letter.stream), self.streams[0])

    async def count(self) -> int:
        return sum([int(await self.redis.xlen(stream)) for stream in self.streams])

    async def page(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """The oldest `limit` records (after the record id `after`)."""
        start = "-" if after is None else f"({after}"
        found: list[DeadLetter] = []
        for stream in self.streams:
            records: Any = await self.redis.xrange(stream, min=start, count=limit)
            found += [DeadLetter.from_record(i, fields) for i, fields in records]
        return sorted(found, key=lambda letter: parse_id(letter.id))[:limit]

    async def get(self, ids: Sequence[str]) -> list[DeadLetter]:
        found = []
        for record_id in ids:
            for stream in self.streams:
                records: Any = await self.redis.xrange(stream, record_id, record_id)
                found += [DeadLetter.from_record(i, fields) for i, fields in records]
        return found

    def target_stream(self, letter: DeadLetter) -> str:
        """The topic's partition today (partitions may have changed since), else the
        stream the entry came from."""
        topic = text(letter.fields.get("topic", b""), "replace")
        if is_valid_topic(topic):
            return self.keys.ingest(partition_of(topic, self.partitions))
        return letter.stream

    async def replay(self, letters: Sequence[DeadLetter]) -> list[tuple[DeadLetter, str]]:
        """Re-queue each entry as a new ingest entry and drop its record, atomically
        per entry (on a cluster, when the two are in different slots: re-queue, then
        drop; interrupted in between, the record stays and could be replayed again);
        returns (letter, new ingest id) pairs. The new id is later than the events that
        went past it, so the replayed event sorts after them."""
        replayed = []
        for letter in letters:
            target, dead = self.target_stream(letter), self._stream_of(letter)
            if len(self.streams) > 1 and slot_of(target) != slot_of(dead):
                new_id = await self.redis.xadd(target, letter.fields)  # type: ignore[arg-type]
                await self.redis.xdel(dead, letter.id)
            else:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.xadd(target, letter.fields)  # type: ignore[arg-type]
                    pipe.xdel(dead, letter.id)
                    new_id, _ = await pipe.execute()
            replayed.append((letter, text(new_id, "replace")))
        return replayed

    async def drop(self, letters: Sequence[DeadLetter]) -> int:
        dropped = 0
        for stream in self.streams:
            ids = [letter.id for letter in letters if self._stream_of(letter) == stream]
            if ids:
                dropped += int(await self.redis.xdel(stream, *ids))
        return dropped
