"""History by time against real web and worker processes: `subscribe {from}` and the
range read give back exactly what was posted from a time on, handed to live with no gap
and no duplicate while events keep arriving; topics and their tiers are trimmed by time
(`retention` in the pipelines file); `resolution: "auto"` serves the documented tier."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.dev.embedded import RedisServer
from tests.helpers.clients import Collector, post_events
from tests.helpers.processes import ProcessGroup
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.system


def ms(event_id: str) -> int:
    return int(event_id.partition("-")[0])


class Feed:
    """Posts `per_tick` events to `topic` every `tick_s` until stopped; `ids` in order."""

    def __init__(self, url: str, topic: str, per_tick: int = 5, tick_s: float = 0.02) -> None:
        self.url, self.topic, self.per_tick, self.tick_s = url, topic, per_tick, tick_s
        self.ids: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            n = 0
            while not self._stop.is_set():
                batch = [
                    {"topic": self.topic, "data": {"value": n + i}} for i in range(self.per_tick)
                ]
                self.ids += await post_events(self.url, batch, http)
                n += self.per_tick
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.tick_s)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Feed]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            self._stop.set()
            await task

    async def until(self, count: int) -> None:
        await eventually(lambda: len(self.ids) >= count, f"{count} posted", timeout=30)


async def range_read(url: str, topic: str, start: int) -> list[dict[str, Any]]:
    """Every page of `GET /api/v1/topics/{topic}/events?from=start`."""
    events: list[dict[str, Any]] = []
    query = {"from": str(start), "limit": "100"}
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{url}/api/v1/topics/{topic}/events", params=query) as reply:
                assert reply.status == 200
                body = await reply.json()
            events += body["events"]
            if body["next"] is None:
                return events
            query["cursor"] = body["next"]


async def test_from_replays_exactly_what_was_posted_since_then_goes_live(
    processes: ProcessGroup, settings: Settings
) -> None:
    web = processes.web(settings)
    processes.worker(settings)
    watcher = await Collector("watcher").connect(web.url)
    async with Feed(web.url, "tm.seam").running() as feed:
        await feed.until(300)
        start = ms(feed.ids[100])
        ack = await watcher.subscribe("tm.seam", **{"from": start})  # while events arrive
        await feed.until(len(feed.ids) + 100)
    posted_from = [i for i in feed.ids if ms(i) >= start]
    await watcher.wait_for_id(feed.ids[-1])

    assert ack == {"ok": True, "topic": "tm.seam", "from": start, "complete": True}
    assert watcher.log[0] == ("ack", ack)
    assert [e["id"] for e in watcher.events] == posted_from  # no gap, no duplicate
    assert [e["id"] for e in await range_read(web.url, "tm.seam", start)] == posted_from
    await watcher.close()


async def test_from_before_history_says_where_it_starts(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    web = processes.web(settings)
    processes.worker(settings)
    ids = await post_events(web.url, [{"topic": "tm.old", "data": {"n": n}} for n in range(10)])
    key = Keys(settings.prefix).topic("tm.old")

    async def written() -> bool:
        return int(await redis.xlen(key)) == 10

    await eventually(written, "history written")
    await redis.xtrim(key, maxlen=6, approximate=False)  # the first four are gone
    watcher = await Collector("watcher").connect(web.url)
    ack = await watcher.subscribe("tm.old", **{"from": ms(ids[0])}, snapshot=1)
    assert (ack["complete"], ack["from"]) == (False, ms(ids[4]))
    assert [e["id"] for e in ack["events"]] == ids[-1:]
    await watcher.wait_for_id(ids[-1])
    assert [e["id"] for e in watcher.events] == ids[4:]
    await watcher.close()


PIPELINES = {
    "pipelines": [
        {"name": "metrics", "match": "tm.*", "windows": {"sizes": ["100ms", "1s"], "lateness": 0}}
    ],
    "retention": [
        {"match": "tm.*:100ms", "keep": "1s"},
        {"match": "tm.*:1s", "keep": "1h"},
        {"match": "tm.*", "keep": "500ms"},
    ],
}


@pytest.fixture
async def tight_redis(own_redis: RedisServer) -> RedisServer:
    """Redis frees a stream's memory a node at a time (100 entries by default): one
    entry per node makes `MINID ~` trim exactly, so the test can say which are gone."""
    redis = Redis.from_url(own_redis.url)
    await redis.config_set("stream-node-max-entries", 1)
    await redis.aclose()
    return own_redis


async def test_topics_and_tiers_are_trimmed_by_time(
    processes: ProcessGroup, settings: Settings, tight_redis: RedisServer, tmp_path: Path
) -> None:
    pipelines = tmp_path / "pipelines.json"
    pipelines.write_text(json.dumps(PIPELINES))
    settings = settings.with_overrides(redis_url=tight_redis.url, pipelines_file=str(pipelines))
    web = processes.web(settings)
    processes.worker(settings)
    redis = Redis.from_url(tight_redis.url)
    keys = Keys(settings.prefix)

    async def held(topic: str) -> list[str]:
        return [i.decode() for i, _ in await redis.xrange(keys.topic(topic))]

    async with Feed(web.url, "tm.cpu", per_tick=2, tick_s=0.05).running() as feed:
        await eventually(
            lambda: bool(feed.ids) and ms(feed.ids[-1]) - ms(feed.ids[0]) > 2500,
            "2.5 s of events",
            timeout=30,
        )
    last = feed.ids[-1]

    async def written() -> bool:
        return (await held("tm.cpu"))[-1:] == [last]

    await eventually(written, "the last event in history")

    raw = await held("tm.cpu")
    assert raw == [i for i in feed.ids if ms(i) >= ms(last) - 500]  # recent kept, old gone
    fine, coarse = await held("tm.cpu:100ms"), await held("tm.cpu:1s")
    assert fine  # a second of 100 ms windows, the older ones gone
    assert ms(fine[-1]) - ms(fine[0]) <= 1000  # kept: the second before its newest
    assert ms(fine[0]) > ms(feed.ids[0]) + 100  # gone: the first windows (2.5 s ago)
    assert len(coarse) >= 2  # 1 s windows are kept an hour: the first is still there
    assert ms(coarse[0]) <= ms(feed.ids[0]) + 1000
    await redis.aclose()


async def test_resolution_auto_serves_the_documented_tier(
    processes: ProcessGroup, settings: Settings
) -> None:
    web = processes.web(settings)
    watcher = await Collector("watcher").connect(web.url)
    now = int(time.time() * 1000)
    expected = {5: "1s", 60: "10s", 24 * 60: "1m", 7 * 24 * 60: "1m"}  # minutes -> tier
    for minutes, label in expected.items():
        ack = await watcher.subscribe(
            "metrics.cpu", **{"from": now - minutes * 60_000}, resolution="auto", points=600
        )
        assert (ack["topic"], ack["resolution"]) == (f"metrics.cpu:{label}", label)
        assert (await watcher.request("unsubscribe", {"topic": ack["topic"]}))["ok"]
    # More points: a finer tier; a topic no pipeline aggregates is served raw.
    ack = await watcher.subscribe(
        "metrics.cpu", **{"from": now - 1_800_000}, resolution="auto", points=3600
    )
    assert ack["topic"] == "metrics.cpu:1s"
    ack = await watcher.subscribe("plain.topic", **{"from": now}, resolution="auto")
    assert (ack["topic"], ack["resolution"]) == ("plain.topic", "raw")
    refused = await watcher.request(
        "subscribe", {"topic": "metrics.cpu", "from": now, "since": "1-0"}
    )
    assert refused["error"]["fields"] == {"from": ["Use since or from, not both."]}
    await watcher.close()
