"""A producer for fault tests: posts numbered events over topics and remembers every id
the ingest API acknowledged, per topic, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from realtime import jsoncodec


@dataclass
class Feed:
    url: str
    topics: Sequence[str]
    batch: int = 50
    acknowledged: dict[str, list[str]] = field(default_factory=dict)
    refused: int = 0  # requests answered 503 (nothing stored)
    sent: int = 0

    def __post_init__(self) -> None:
        self.acknowledged = {topic: [] for topic in self.topics}

    @property
    def accepted(self) -> int:
        return sum(map(len, self.acknowledged.values()))

    def events(self, start: int, count: int) -> list[dict[str, Any]]:
        return [
            {"topic": self.topics[n % len(self.topics)], "data": {"seq": n}}
            for n in range(start, start + count)
        ]

    async def post(self, http: aiohttp.ClientSession, events: list[dict[str, Any]]) -> bool:
        """One request; True if accepted (202), False if refused with 503."""
        async with http.post(self.url + "/api/v1/events", data=jsoncodec.dumpb(events)) as r:
            body = await r.json(loads=jsoncodec.loads)
            if r.status == 503:
                self.refused += 1
                return False
            assert r.status == 202, f"ingest answered {r.status}: {body}"
        for event, event_id in zip(events, body["ids"], strict=True):
            self.acknowledged[event["topic"]].append(event_id)
        return True

    async def run(self, total: int, *, retry_refused: bool = False, pace_s: float = 0) -> None:
        """Post `total` events in batches; a refused batch is retried when
        `retry_refused`, otherwise skipped (it was not stored)."""
        async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:
            while self.sent < total:
                events = self.events(self.sent, min(self.batch, total - self.sent))
                try:
                    accepted = await self.post(http, events)
                except aiohttp.ClientConnectionError:
                    accepted = False
                if accepted or not retry_refused:
                    self.sent += len(events)
                if pace_s or not accepted:
                    await asyncio.sleep(pace_s or 0.05)  # a producer's own pacing, not a sync
