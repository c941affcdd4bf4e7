"""`subscribe {topic, from}` against real Redis, history written as the worker writes it:
the replay by time comes in pages, `snapshot` and `max_rate` keep their meanings beside
it, an explicit tier works as any topic. (Across real processes, with events arriving
at the seam: tests/test_time_machine.py.)"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from realtime.core.settings import Settings
from tests.helpers.clients import Collector
from tests.helpers.history import write_history
from tests.test_resume import updates

pytestmark = pytest.mark.integration


async def test_from_replays_from_that_time_in_pages(
    client: Collector, redis: Redis, settings: Settings
) -> None:
    written = await write_history(redis, settings, "f.long", range(1, 1201))
    ack = await client.subscribe("f.long", **{"from": 100})
    assert ack == {"ok": True, "topic": "f.long", "from": 100, "complete": True}
    await client.wait_for_id(written[-1])
    assert [e["id"] for e in client.events] == written[99:]  # 100-0 on: the time included
    assert [len(u) for u in updates(client)] == [500, 500, 101]


async def test_snapshot_and_max_rate_keep_their_meanings_beside_from(
    client: Collector, redis: Redis, settings: Settings
) -> None:
    written = await write_history(redis, settings, "f.both", range(1, 21))
    ack = await client.subscribe("f.both", **{"from": 11}, snapshot=2, max_rate=1)
    assert [e["id"] for e in ack["events"]] == written[-2:]  # the newest, in the ack
    assert (ack["max_rate"], ack["from"], ack["complete"]) == (1, 11, True)
    await client.wait_for_id(written[-1])
    merged = client.events  # the replay, merged (max_rate): at most 2 in its first second
    assert len(merged) <= 2
    assert merged[0]["data"]["first_id"] == "11-0"
    assert sum(e["data"]["count"] for e in merged) == 10


async def test_a_time_past_the_newest_or_an_empty_topic_replays_nothing(
    client: Collector, redis: Redis, settings: Settings
) -> None:
    await write_history(redis, settings, "f.past", range(1, 4))
    ack = await client.subscribe("f.past", **{"from": 4})
    assert ack == {"ok": True, "topic": "f.past", "from": 4, "complete": True}
    ack = await client.subscribe("f.never", **{"from": 0})
    assert ack == {"ok": True, "topic": "f.never", "from": 0, "complete": True}
    assert client.events == []


async def test_an_explicit_tier_is_served_as_asked(
    client: Collector, redis: Redis, settings: Settings
) -> None:
    written = await write_history(redis, settings, "metrics.x:10s", range(10_000, 60_001, 10_000))
    ack = await client.subscribe("metrics.x:10s", **{"from": 30_000})
    assert ack == {"ok": True, "topic": "metrics.x:10s", "from": 30_000, "complete": True}
    await client.wait_for_id(written[-1])
    assert [e["id"] for e in client.events] == written[2:]
