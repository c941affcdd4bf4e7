"""A producer for fault tests: posts numbered events over topics and remembers every id
the ingest API acknowledged, per topic, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from realtime.core import jsoncodec


@dataclass
class Feed:
    url: str
    topics: Sequence[str]
    batch: int = 50
    keyed: bool = False  # give every event an idempotency key, so a retry is never stored twice
    acknowledged: dict[str, list[str]] = field(default_factory=dict)
    refused: int = 0  # requests answered 503 or not answered (nothing stored)
    sent: int = 0
    stopped: bool = False  # `run` posts no further request once set
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.acknowledged = {topic: [] for topic in self.topics}

    async def wait_until(
        self, condition: Callable[[], bool], what: str, timeout: float = 30
    ) -> None:
        async with self.progress:
            try:
                await asyncio.wait_for(self.progress.wait_for(condition), timeout)
            except TimeoutError:
                raise AssertionError(f"feed: no {what} after {timeout}s") from None

    def last_ids(self) -> dict[str, str]:
        return {t: ids[-1] for t, ids in self.acknowledged.items() if ids}

    @property
    def accepted(self) -> int:
        return sum(map(len, self.acknowledged.values()))

    def events(self, start: int, count: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = [
            {"topic": self.topics[n % len(self.topics)], "data": {"seq": n}}
            for n in range(start, start + count)
        ]
        if self.keyed:
            for n, event in enumerate(events, start):
                event["key"] = f"seq-{n}"
        return events

    async def post(self, http: aiohttp.ClientSession, events: list[dict[str, Any]]) -> bool:
        """One request; True if accepted (202), False if refused with 503."""
        async with http.post(self.url + "/api/v1/events", data=jsoncodec.dumpb(events)) as r:
            body = await r.json(loads=jsoncodec.loads)
            assert r.status in (202, 503), f"ingest answered {r.status}: {body}"
        async with self.progress:
            if r.status == 503:
                self.refused += 1
            else:
                for event, event_id in zip(events, body["ids"], strict=True):
                    self.acknowledged[event["topic"]].append(event_id)
            self.progress.notify_all()
        return r.status == 202

    async def run(self, total: int, *, retry_refused: bool = False, pace_s: float = 0) -> None:
        """Post `total` events in batches; a refused batch is retried when
        `retry_refused`, otherwise skipped (it was not stored)."""
        async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:
            while self.sent < total and not self.stopped:
                events = self.events(self.sent, min(self.batch, total - self.sent))
                try:
                    accepted = await self.post(http, events)
                except aiohttp.ClientConnectionError:
                    accepted = False
                    async with self.progress:
                        self.refused += 1
                        self.progress.notify_all()
                if accepted or not retry_refused:
                    self.sent += len(events)
                if pace_s or not accepted:
                    await asyncio.sleep(pace_s or 0.05)  # a producer's own pacing, not a sync
