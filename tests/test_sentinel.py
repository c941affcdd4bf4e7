"""A Sentinel failover under load, with real processes: the primary is killed (SIGKILL)
while a producer posts; the web and the worker follow the Sentinel to the promoted
replica by themselves, and clients end with every accepted event, once, in order.

What makes "accepted" safe here (docs/scaling.md, "Redis Sentinel"): every Redis fsyncs each
write (`appendfsync always`), refuses writes without a replica (`min-replicas-to-write
1`), and the ingest API answers 202 only after a replica confirmed the events
(`REALTIME_WAIT_REPLICAS=1`: Redis replication is asynchronous otherwise)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from realtime.core.settings import Settings
from tests.helpers.clients import Collector, Watcher, id_key
from tests.helpers.feed import Feed
from tests.helpers.processes import ProcessGroup
from tests.helpers.redis_topology import SentinelSet

pytestmark = pytest.mark.system

TOPICS = [f"ha.t{n}" for n in range(4)]


def assert_in_order_with_all(got: list[str], acknowledged: list[str], who: str) -> None:
    """Every acknowledged id, in order, each once. (An event refused with 503 may still
    have been stored by the old primary and delivered before it died: that one is extra,
    not missing, so `got` may hold ids beyond `acknowledged`.)"""
    assert len(set(got)) == len(got), f"{who}: duplicates"
    assert got == sorted(got, key=id_key), f"{who}: out of order"
    missing = set(acknowledged) - set(got)
    assert not missing, f"{who}: {len(missing)} accepted events never delivered"


async def test_a_sentinel_failover_loses_no_accepted_event(
    processes: ProcessGroup, prefix: str, tmp_path: Path
) -> None:
    redis_set = SentinelSet(tmp_path / "redis").start()
    try:
        settings = Settings(
            redis_url=redis_set.url,
            prefix=prefix,
            insecure=True,
            lease_ms=1000,
            block_ms=200,
            redis_timeout_s=1.0,
            wait_replicas=1,
        )
        web = processes.web(settings)
        processes.worker(settings)
        watcher = await Watcher(web.url, "watcher").start(*TOPICS)
        feed = Feed(web.url, TOPICS, batch=10, keyed=True)
        posting = asyncio.create_task(feed.run(1500, retry_refused=True, pace_s=0.01))
        await watcher.wait_for(200)

        old_primary = redis_set.primary.port
        redis_set.primary.kill()
        before_kill = feed.last_ids()
        accepted_at_kill = feed.accepted
        await feed.wait_until(lambda: feed.refused > 0, "refusal while there is no primary")
        await feed.wait_until(
            lambda: feed.accepted > accepted_at_kill + 100, "events after the failover", timeout=60
        )
        assert redis_set.primary_port() != old_primary
        await posting

        # The connected client: its web instance caught it up after its own reconnect.
        await watcher.wait_for_ids(feed.last_ids(), timeout=60)
        for topic, ids in feed.acknowledged.items():
            assert_in_order_with_all(watcher.topic_ids(topic), ids, f"watcher {topic}")
        assert watcher.gaps == []
        await watcher.close()

        # A client that was away: it resumes from before the failover, from history.
        topic = TOPICS[0]
        since = before_kill[topic]
        resumed = await Collector("resumed").connect(web.url)
        ack = await resumed.subscribe(topic, since=since)
        assert ack == {"ok": True, "topic": topic, "recovered": True}
        await resumed.wait_for_id(feed.last_ids()[topic], topic)
        after = feed.acknowledged[topic][feed.acknowledged[topic].index(since) + 1 :]
        assert_in_order_with_all([e["id"] for e in resumed.events], after, "resumed")
        await resumed.close()
    finally:
        processes.stop_all()
        redis_set.cleanup()
