"""End to end with real processes: two web instances, one worker, one Redis."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from realtime.core.settings import Settings
from tests.helpers.clients import Collector, id_key, post_events
from tests.helpers.processes import ProcessGroup

pytestmark = pytest.mark.system

EVENTS = 500
BATCH = 25


async def test_every_client_on_every_instance_gets_every_event_once_in_order(
    processes: ProcessGroup, settings: Settings
) -> None:
    web1 = processes.web(settings)
    web2 = processes.web(settings)
    processes.worker(settings)

    watchers = [
        await Collector("websocket@web1").connect(web1.url, ["websocket"]),
        await Collector("polling@web1").connect(web1.url, ["polling"]),
        await Collector("websocket@web2").connect(web2.url, ["websocket"]),
        await Collector("polling@web2").connect(web2.url, ["polling"]),
    ]
    other = await Collector("other-topic@web2").connect(web2.url)
    for watcher in watchers:
        await watcher.subscribe("e2e.main")
    await other.subscribe("e2e.other")

    posted: list[str] = []
    async with aiohttp.ClientSession() as http:
        for start in range(0, EVENTS, BATCH):
            batch = [{"topic": "e2e.main", "data": {"seq": n}} for n in range(start, start + BATCH)]
            posted += await post_events(web1.url, batch, http)

        for watcher in watchers:
            events = await watcher.wait_for(EVENTS, timeout=60)
            assert len(events) == EVENTS, f"{watcher.name} got duplicates"
            assert [e["data"]["seq"] for e in events] == list(range(EVENTS)), watcher.name
            assert [e["id"] for e in events] == posted, watcher.name
            assert all(e["topic"] == "e2e.main" for e in events)
            assert sorted(posted, key=id_key) == posted

        # Barrier: once the other topic's own event arrives, anything misrouted would have too.
        [marker] = await post_events(web1.url, {"topic": "e2e.other", "data": {}}, http)
    await other.wait_for(1)
    assert [e["id"] for e in other.events] == [marker]

    assert [w.transport for w in watchers] == ["websocket", "polling", "websocket", "polling"]
    await asyncio.gather(*(c.close() for c in [*watchers, other]))
