"""`subscribe {"topic", "max_rate": hz}` through real web and worker processes: the client
gets at most `max_rate` packets a second, each merging what it did not get on its own,
so the merged counts and sums add up to exactly what was published."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import pytest

from realtime.core.settings import Settings
from tests.helpers.clients import Collector, post_events
from tests.helpers.processes import ProcessGroup

pytestmark = pytest.mark.system

RATE = 4.0
EVENTS = 400


async def test_max_rate_merges_everything_at_most_rate_packets_a_second(
    processes: ProcessGroup, settings: Settings
) -> None:
    web = processes.web(settings)
    processes.worker(settings)
    slow = await Collector("max_rate").connect(web.url)
    full = await Collector("full").connect(web.url)
    ack = await slow.subscribe("sensor.temp", max_rate=RATE)
    assert ack["max_rate"] == RATE
    await full.subscribe("sensor.temp")

    values = [round(math.sin(n) * 50, 3) for n in range(EVENTS)]
    ids: list[str] = []
    async with aiohttp.ClientSession() as http:
        for start in range(0, EVENTS, 20):  # about 2 s of publishing
            batch = [
                {"topic": "sensor.temp", "data": {"value": v}} for v in values[start : start + 20]
            ]
            ids += await post_events(web.url, batch, http)
            await asyncio.sleep(0.1)
    await full.wait_for(EVENTS)
    await slow.wait_for_id(ids[-1], timeout=10)

    merged = [e["data"] for e in slow.events]
    assert sum(m["count"] for m in merged) == EVENTS
    assert sum(m["values"] for m in merged) == EVENTS
    assert math.isclose(sum(m["sum"] for m in merged), math.fsum(values), abs_tol=1e-6)
    assert min(m["min"] for m in merged) == min(values)
    assert max(m["max"] for m in merged) == max(values)
    assert merged[-1]["last"] == values[-1]
    # Each merge starts right after the previous one's last event: no gap, no overlap.
    position = {event_id: n for n, event_id in enumerate(ids)}
    for before, after in zip(slow.events, slow.events[1:], strict=False):
        assert position[after["data"]["first_id"]] == position[before["id"]] + 1
    # Pacing: sends are at least 1/RATE apart, so a span of T seconds holds at most
    # RATE * T + 1 of them (a little slack for arrival jitter).
    span = slow.arrivals[-1] - slow.arrivals[0]
    assert slow.packets <= RATE * span + 2, (slow.packets, span)
    assert slow.packets < EVENTS / 10  # it did merge
    await asyncio.gather(slow.close(), full.close())
