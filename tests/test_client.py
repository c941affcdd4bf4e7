"""The Python client SDK (`realtime.client`) against a real server and Redis: trying
URLs in turn, gap reports, refusals; and its duplicate filter directly. Failover and
resume after a server dies are in test_fault_web.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime.client import RealtimeClient, SubscribeError
from realtime.core.settings import Settings
from tests.helpers.clients import Watcher
from tests.helpers.history import write_history
from tests.helpers.inprocess import running_app
from tests.helpers.waiting import eventually


@pytest.mark.integration
async def test_keeps_trying_until_a_server_answers(settings: Settings) -> None:
    async with running_app(settings) as url:
        dead = "http://127.0.0.1:9"  # nothing listens there
        watcher = Watcher([dead, url])
        await watcher.start("c.b")
        assert watcher.client.url == url
        await watcher.close()


@pytest.mark.integration
async def test_a_gap_is_reported_and_delivery_goes_on_from_the_snapshot(
    settings: Settings, redis: Redis
) -> None:
    await write_history(redis, settings, "c.gap", range(5, 10))  # 1-0..4-0 were trimmed
    async with running_app(settings) as url:
        watcher = await Watcher(url).start()
        ack = await watcher.client.subscribe("c.gap", since="2-0", snapshot=2)
        assert ack["recovered"] is False
        assert [topic for topic, _ in watcher.gaps] == ["c.gap"]
        assert watcher.topic_ids("c.gap") == ["8-0", "9-0"]
        assert watcher.client.last_id("c.gap") == "9-0"
        assert watcher.client.stats.gaps == 1
        await watcher.close()


@pytest.mark.integration
async def test_a_refused_subscription_raises_and_is_reported(settings: Settings) -> None:
    async with running_app(settings) as url:
        watcher = await Watcher(url).start()
        with pytest.raises(SubscribeError) as refused:
            await watcher.client.subscribe("Not A Topic")
        assert refused.value.code == "invalid"
        assert [topic for topic, _ in watcher.errors] == ["Not A Topic"]
        await watcher.close()


@pytest.mark.integration
async def test_start_replays_from_a_time_and_max_rate_is_asked_for(
    settings: Settings, redis: Redis
) -> None:
    await write_history(redis, settings, "c.from", range(5, 10))
    async with running_app(settings) as url:
        watcher = await Watcher(url).start()
        ack = await watcher.client.subscribe("c.from", start=7)
        assert (ack["from"], ack["complete"]) == (7, True)
        await watcher.wait_until(lambda: len(watcher.events) == 3, "the replay from 7")
        assert watcher.topic_ids("c.from") == ["7-0", "8-0", "9-0"]
        paced = await watcher.client.subscribe("c.paced", max_rate=5)
        assert paced["max_rate"] == 5
        with pytest.raises(ValueError, match="since or start"):
            await watcher.client.subscribe("c.other", since="1-0", start=1)
        await watcher.close()


@pytest.mark.integration
async def test_presence_counts_reach_the_handler_and_survive_a_recovered_reconnect(
    settings: Settings,
) -> None:
    fast = settings.with_overrides(presence_flush_ms=20.0)
    seen: list[tuple[str, int]] = []
    async with running_app(fast) as url:
        first = Watcher(url, on_presence=lambda topic, info: seen.append((topic, info["count"])))
        await first.start()
        ack = await first.client.subscribe("c.watched", presence=True)
        assert ack["presence"]["count"] == 1
        assert seen == [("c.watched", 1)]
        second = await Watcher(url, name="second").start("c.watched")
        await eventually(lambda: first.client.presence("c.watched") == 2, "a count of 2")
        # A dropped transport: the session is recovered, and presence events go on.
        await first.client.sio.eio.ws.close()  # the transport, not the session
        await eventually(lambda: first.client.stats.recovered == 1, "a recovery")
        await second.close()
        await eventually(lambda: first.client.presence("c.watched") == 1, "a count of 1")
        assert seen[-1] == ("c.watched", 1)
        await first.client.unsubscribe("c.watched")
        assert first.client.presence("c.watched") is None
        await first.close()


@pytest.mark.unit
async def test_events_already_seen_are_dropped() -> None:
    delivered: list[list[str]] = []
    client = RealtimeClient(
        "http://127.0.0.1:9", on_events=lambda events: delivered.append([e["id"] for e in events])
    )
    subscribing = asyncio.create_task(client.subscribe("t", since="5-0"))
    await asyncio.sleep(0)  # registered; not connected, so nothing is sent

    def event(event_id: str, topic: str = "t") -> dict[str, Any]:
        return {"topic": topic, "id": event_id, "ts": 0, "data": {}}

    await client._on_update([event("4-0"), event("5-0"), event("6-0"), event("10-0")])
    await client._on_update([event("9-0"), event("10-0"), event("11-0"), event("1-0", "other")])
    assert delivered == [["6-0", "10-0"], ["11-0"]]
    assert client.stats.duplicates == 4
    assert client.last_id("t") == "11-0"
    subscribing.cancel()
    await client.close()
