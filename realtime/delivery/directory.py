"""The topic directory, the reading side: a page of the topics that had an event lately,
by name, with their last event and recent rate, from what the worker's commits record
per partition (`realtime/core/directory.py`).

A page reads the partitions' name sets a chunk at a time (ZRANGEBYLEX, one pipelined
round trip per chunk), merges them in name order, keeps the topics the caller may see
that are not idle, and reads their records (HMGET, one more round trip). The work of one
request is bounded (`scan_budget` names): past it a page may hold fewer topics than asked,
with a cursor to go on. Idle topics it meets are removed, a bounded number per partition,
by the same atomic rule the worker uses (a topic written meanwhile stays).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from realtime.core.directory import (
    LUA_PRUNE,
    PRUNE_PER_READ,
    Info,
    decode_info,
    is_idle,
    lex_range,
    merge_names,
    newest,
    rate,
)
from realtime.core.keys import Keys
from realtime.core.text import text

logger = logging.getLogger(__name__)

SCAN_BUDGET = 10_000  # names one request looks at, at most

_PRUNE = LUA_PRUNE + "\nreturn prune_directory(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])\n"


@dataclass(frozen=True)
class Listed:
    topic: str
    last_id: str
    last_ts: int
    rate: float  # events per second, recently


@dataclass(frozen=True)
class Page:
    topics: list[Listed]
    after: str | None  # the next page starts after this name (None: this was the last)


class DirectoryReader:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        partitions: int,
        idle_ms: int,
        scan_budget: int = SCAN_BUDGET,
    ) -> None:
        self.redis = redis
        self.partition_keys = [keys.directory(p) for p in range(partitions)]
        self.idle_ms = idle_ms
        self.scan_budget = scan_budget
        self._prune = redis.register_script(_PRUNE)
        self._time = redis.register_script("return redis.call('TIME')")

    async def page(
        self, prefix: str, after: str | None, limit: int, allows: Callable[[str], bool]
    ) -> Page:
        """Up to `limit` topics starting with `prefix`, after the name `after`, in name
        order, that `allows` lets through and that are not idle."""
        now_ms = await self._now()
        page, idle_in = await self._scan(prefix, after, limit, allows, now_ms)
        for p in sorted(idle_in):
            removed = await self._prune(
                keys=list(self.partition_keys[p]), args=[now_ms - self.idle_ms, PRUNE_PER_READ]
            )
            logger.debug("removed %s idle topics from the directory of partition %d", removed, p)
        return page

    async def _scan(
        self,
        prefix: str,
        after: str | None,
        limit: int,
        allows: Callable[[str], bool],
        now_ms: int,
    ) -> tuple[Page, set[int]]:
        """The page, and the partitions where idle topics were met."""
        listed: list[Listed] = []
        chunk = limit + 1
        scanned = 0
        idle_in: set[int] = set()
        while True:
            batches = await self._names(*lex_range(prefix, after), chunk)
            names, frontier = merge_names(batches, chunk)
            scanned += len(names)
            wanted = [name for name in names if allows(name)]
            records = await self._records(batches, set(wanted))
            for name in wanted:
                found = records.get(name, [])
                live = [info for _, info in found if not is_idle(info, now_ms, self.idle_ms)]
                idle_in.update(p for p, info in found if is_idle(info, now_ms, self.idle_ms))
                if not live:
                    continue
                last = newest(live)
                speed = sum(rate(info, now_ms) for info in live)
                listed.append(Listed(name, last.last_id, last.last_ts, round(speed, 3)))
                if len(listed) == limit:
                    more = frontier is not None or name != names[-1]
                    return Page(listed, name if more else None), idle_in
            if frontier is None:
                return Page(listed, None), idle_in
            after = frontier
            if scanned >= self.scan_budget:
                return Page(listed, after), idle_in

    async def _now(self) -> int:
        """Redis time, as the commits record it: a script with a key, so that on a
        cluster it runs on a node of its own (TIME alone would go to every node)."""
        seconds, micros = await self._time(keys=[self.partition_keys[0][0]])
        return int(seconds) * 1000 + int(micros) // 1000

    async def _names(self, low: str, high: str, chunk: int) -> list[list[str]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for names, _, _ in self.partition_keys:
                pipe.zrangebylex(names, low, high, start=0, num=chunk)
            replies: list[Any] = await pipe.execute()
        return [[text(name) for name in reply] for reply in replies]

    async def _records(
        self, batches: list[list[str]], wanted: set[str]
    ) -> dict[str, list[tuple[int, Info]]]:
        """topic -> (partition, record) of each partition that has the topic."""
        asked = [(p, [n for n in batch if n in wanted]) for p, batch in enumerate(batches)]
        asked = [(p, names) for p, names in asked if names]
        if not asked:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for p, names in asked:
                pipe.hmget(self.partition_keys[p][2], names)
            replies: list[Any] = await pipe.execute()
        found: dict[str, list[tuple[int, Info]]] = {}
        for (p, names), values in zip(asked, replies, strict=True):
            for name, raw in zip(names, values, strict=True):
                info = decode_info(raw)
                if info is not None:
                    found.setdefault(name, []).append((p, info))
        return found
