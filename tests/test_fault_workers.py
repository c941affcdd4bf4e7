"""Breaking the workers on purpose, with real processes: SIGKILL mid-stream, partitions
moving between workers, and a poison entry. Every acknowledged event must reach the
watching client exactly once, in order per topic."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest
from redis.asyncio import Redis

from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from tests.helpers.clients import Collector, post_events
from tests.helpers.feed import Feed
from tests.helpers.processes import ProcessGroup, RealtimeProcess, settings_env

pytestmark = pytest.mark.system

TOPICS = [f"fault.t{n}" for n in range(20)]


def fast(settings: Settings, **overrides: object) -> Settings:
    """Short leases so a dead worker's partitions move within about a second."""
    return settings.with_overrides(lease_ms=1000, block_ms=200, **overrides)


def assert_exactly_once_in_order(client: Collector, feed: Feed) -> None:
    for topic, ids in feed.acknowledged.items():
        got = [e["id"] for e in client.topic_events(topic)]
        assert got == ids, f"{topic}: {len(got)} received, {len(ids)} acknowledged"


async def held_by(redis: Redis, settings: Settings, worker: RealtimeProcess) -> list[int]:
    """The partitions whose lease the worker process holds (its default consumer name is
    host-pid)."""
    assert worker.process is not None
    name = f"{socket.gethostname()}-{worker.process.pid}#"
    keys = Keys(settings.prefix)
    tokens = [await redis.get(keys.lease(p)) for p in range(settings.partitions)]
    return [p for p, t in enumerate(tokens) if t is not None and t.decode().startswith(name)]


async def watch_all(url: str, topics: list[str]) -> Collector:
    client = await Collector("watcher").connect(url)
    for topic in topics:
        await client.subscribe(topic)
    return client


async def test_worker_killed_mid_stream_loses_and_repeats_nothing(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    settings = fast(settings)
    web = processes.web(settings)
    workers = [processes.worker(settings), processes.worker(settings)]
    client = await watch_all(web.url, TOPICS[:10])
    feed = Feed(web.url, TOPICS[:10], batch=50)

    posting = asyncio.create_task(feed.run(5000, pace_s=0.02))
    await client.wait_for(1500, timeout=60)
    # Whichever worker owns more partitions now (both, once the second has its share).
    held = {w: await held_by(redis, settings, w) for w in workers}
    victim = max(workers, key=lambda w: len(held[w]))
    assert held[victim], held
    assert not posting.done()
    victim.kill()  # SIGKILL: no lease released, a batch possibly half done
    await posting
    await client.wait_for(5000, timeout=60)

    assert feed.accepted == 5000
    assert_exactly_once_in_order(client, feed)
    await client.close()


async def test_order_holds_while_partitions_move_between_workers(
    processes: ProcessGroup, settings: Settings
) -> None:
    settings = fast(settings, partitions=8)
    web = processes.web(settings)
    workers = [processes.worker(settings) for _ in range(3)]
    client = await watch_all(web.url, TOPICS)
    feed = Feed(web.url, TOPICS, batch=20)

    posting = asyncio.create_task(feed.run(4000, pace_s=0.01))
    await client.wait_for(600, timeout=60)
    workers[0].kill()
    await client.wait_for(1200, timeout=60)
    processes.worker(settings)  # partitions move to the newcomer
    await client.wait_for(1800, timeout=60)
    workers[1].stop()  # clean: hands its partitions over at once
    await client.wait_for(2400, timeout=60)
    workers[2].kill()
    processes.worker(settings)
    await posting
    await client.wait_for(4000, timeout=60)

    assert_exactly_once_in_order(client, feed)
    await client.close()


async def test_a_poison_entry_is_dead_lettered_and_the_events_after_it_arrive(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    settings = fast(settings, max_attempts=2)
    keys = Keys(settings.prefix)
    web = processes.web(settings)
    processes.worker(settings)
    poisoned = "fault.poison"
    healthy = next(
        t
        for t in TOPICS
        if partition_of(t, settings.partitions) == partition_of(poisoned, settings.partitions)
    )
    await redis.set(keys.topic(poisoned), "a string where a stream belongs")
    client = await watch_all(web.url, [healthy, poisoned])

    before = await post_events(web.url, {"topic": healthy, "data": {"n": 1}})
    [poison] = await post_events(web.url, {"topic": poisoned, "data": {"n": 2}})
    after = await post_events(web.url, [{"topic": healthy, "data": {"n": n}} for n in (3, 4)])
    await client.wait_for(3)

    assert [e["id"] for e in client.events] == before + after
    listing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "realtime", "dlq", "list", "--json",
        env=settings_env(settings), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(listing.communicate(), 30)
    assert listing.returncode == 0
    [letter] = [jsoncodec.loads(line) for line in out.splitlines()]
    assert letter["entry_id"] == poison
    assert letter["attempts"] == 2
    assert letter["error"].startswith("failed 2 times; last error: WRONGTYPE")
    assert letter["entry"]["topic"] == poisoned
    await client.close()
