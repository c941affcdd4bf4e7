"""The consumer loop: XREADGROUP a batch, transform, write history, fan out, XACK.

An entry is acknowledged only after its topic events are in history and published.
After a failure the consumer first re-reads its own pending entries (id 0), so nothing
it was given is skipped and each partition's order holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from processors.dead_letters import DeadLetters
from processors.groups import ensure_group, trim_acknowledged
from processors.history import HistoryWriter
from processors.transform import (
    TopicEvent,
    TransformError,
    decode_entry,
    group_by_topic,
    passthrough,
)
from realtime.backoff import Backoff
from realtime.fanout import FanoutError, FanoutManager
from realtime.keys import Keys
from realtime.settings import Settings

logger = logging.getLogger(__name__)

TRIM_INTERVAL_S = 10.0

Fields = Mapping[bytes | str, bytes | str]
Entry = tuple[bytes | str, Fields]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class BatchResult:
    entries: int = 0
    events: int = 0
    dead: int = 0


class Consumer:
    def __init__(
        self,
        redis: Redis,
        fanout: FanoutManager,
        settings: Settings,
    ) -> None:
        self.redis = redis
        self.fanout = fanout
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.group = settings.group
        self.name = settings.consumer
        self.streams = [self.keys.ingest(p) for p in range(settings.partitions)]
        self.history = HistoryWriter(redis, self.keys, settings.history_maxlen)
        self.dead_letters = DeadLetters(redis, self.keys)
        self.processed = 0
        self._last_trim = 0.0

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            await ensure_group(self.redis, stream, self.group)

    async def read(self, pending: bool, block_ms: int) -> list[tuple[str, list[Entry]]]:
        """Our own pending entries (pending=True) or new ones."""
        start = "0" if pending else ">"
        reply: Any = await self.redis.xreadgroup(
            self.group,
            self.name,
            dict.fromkeys(self.streams, start),
            count=self.settings.batch_size,
            block=None if pending else block_ms,
        )
        return [(_text(stream), entries) for stream, entries in reply or [] if entries]

    async def handle(self, stream: str, entries: Sequence[Entry]) -> BatchResult:
        """Process one stream's batch in order; ack it once durable and published."""
        result = BatchResult(entries=len(entries))
        if not entries:
            return result
        events: list[TopicEvent] = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            try:
                events.extend(passthrough(decode_entry(entry_id, fields)))
            except TransformError as exc:
                await self.dead_letters.add(stream, entry_id, fields, str(exc))
                result.dead += 1
        await self.history.append(events)
        await self.fanout.publish_updates(group_by_topic(events))
        await self.redis.xack(stream, self.group, *[_text(i) for i, _ in entries])
        result.events = len(events)
        self.processed += len(entries)
        return result

    async def maybe_trim(self) -> None:
        now = time.monotonic()
        if now - self._last_trim < TRIM_INTERVAL_S:
            return
        self._last_trim = now
        for stream in self.streams:
            await trim_acknowledged(self.redis, stream, self.group)

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Consume until `stop` is set; in burst mode, return once nothing is left."""
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        pending = True
        groups_ready = False
        while not stop.is_set():
            try:
                if not groups_ready:
                    await self.ensure_groups()
                    groups_ready = True
                batches = await self.read(pending, self.settings.block_ms)
                if not batches:
                    if pending:
                        pending = False
                        continue
                    if burst:
                        return
                for stream, entries in batches:
                    await self.handle(stream, entries)
                await self.maybe_trim()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if str(exc).startswith("NOGROUP"):
                    groups_ready = False
                delay = backoff.next_delay()
                logger.warning("worker: Redis refused (%s); retrying in %.1fs", exc, delay)
                pending = True
                await _sleep_or_stop(stop, delay)
            except (RedisError, OSError, FanoutError) as exc:
                delay = backoff.next_delay()
                logger.warning("worker: Redis unavailable (%s); retrying in %.1fs", exc, delay)
                pending = True
                await _sleep_or_stop(stop, delay)


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        pass
