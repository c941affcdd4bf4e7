"""Presence across two real web processes: python-socketio clients come and go on both,
every count stays exact; then one instance is SIGKILLed and its viewers drop out of the
count within REALTIME_PRESENCE_TTL_S (short here), and the watchers are told."""

from __future__ import annotations

import random
import time

import pytest

from realtime.core.settings import Settings
from tests.helpers.clients import Collector
from tests.helpers.presence import PresenceWatcher, counted_everywhere
from tests.helpers.processes import ProcessGroup

pytestmark = pytest.mark.system

TOPIC = "metrics.crowd"
TTL_S = 2.0


async def test_counts_stay_exact_across_instances_and_a_killed_one_drops_out(
    processes: ProcessGroup, settings: Settings
) -> None:
    doomed, spare = (
        processes.web(settings.with_overrides(presence_ttl_s=TTL_S, presence_flush_ms=50.0))
        for _ in range(2)
    )
    watcher = PresenceWatcher()
    await watcher.connect(spare.url)
    await watcher.subscribe(TOPIC, presence=True)
    viewers: list[tuple[str, Collector]] = []
    rng = random.Random(19)
    try:
        # Clients come and go on both instances; after each step every count agrees.
        for step in range(6):
            for _ in range(rng.randint(1, 4)):
                url = rng.choice([doomed.url, spare.url])
                client = await Collector(f"v{len(viewers)}").connect(url)
                await client.subscribe(TOPIC)
                viewers.append((url, client))
            for _ in range(rng.randint(0, 2) if step else 0):
                _, leaving = viewers.pop(rng.randrange(len(viewers)))
                await leaving.close()
            expected = len(viewers) + 1  # and the watcher
            await watcher.wait_count(expected)
            await counted_everywhere([doomed.url, spare.url], TOPIC, expected)
        on_doomed = sum(url == doomed.url for url, _ in viewers)
        assert on_doomed > 0
        doomed.kill()  # SIGKILL: no goodbye written
        killed_at = time.monotonic()
        survivors = len(viewers) - on_doomed + 1
        await watcher.wait_count(survivors, timeout=TTL_S + 15)
        # within the TTL plus a reaper's round and an event interval (slack for a busy box)
        assert time.monotonic() - killed_at < TTL_S + 6
        await counted_everywhere([spare.url], TOPIC, survivors)
    finally:
        for _, client in viewers:
            await client.close()
        await watcher.close()
