"""Presence on a Redis Cluster: two web apps, topics whose keys sit on different shards;
counts exact across the instances and `presence` events through the sharded fan-out."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from tests.helpers.clients import Collector
from tests.helpers.inprocess import serving
from tests.helpers.presence import PresenceWatcher, counted_everywhere
from tests.helpers.redis_topology import ClusterSet

pytestmark = pytest.mark.system

PARTITIONS = 6
TOPICS = [f"metrics.c{n}" for n in range(6)]


async def test_presence_counts_and_events_on_a_cluster(prefix: str, tmp_path: Path) -> None:
    cluster = ClusterSet(tmp_path / "cluster").start()
    try:
        settings = Settings(
            redis_url=cluster.url,
            prefix=prefix,
            insecure=True,
            redis_cluster=True,
            partitions=PARTITIONS,
            redis_timeout_s=2.0,
            presence_flush_ms=20.0,
        )
        keys = Keys.of(settings)
        shards = {cluster.node_of(keys.presence(t)).port for t in TOPICS}
        assert len(shards) > 1, "the topics must sit on more than one shard"
        for topic in TOPICS:  # a topic's presence hash sits with its partition's keys
            ingest = keys.ingest(partition_of(topic, PARTITIONS))
            assert cluster.node_of(keys.presence(topic)) is cluster.node_of(ingest)
        async with serving(settings) as (url_a, _), serving(settings) as (url_b, _):
            watcher = PresenceWatcher()
            await watcher.connect(url_a)
            viewer = await Collector("viewer").connect(url_b)
            try:
                for topic in TOPICS:
                    await watcher.subscribe(topic, presence=True)
                    await viewer.subscribe(topic)

                def both(topic: str) -> bool:
                    counts = [e["count"] for e in watcher.presence if e["topic"] == topic]
                    return bool(counts) and counts[-1] == 2

                for topic in TOPICS:
                    await watcher.wait_until(functools.partial(both, topic), f"2 of {topic}")
                    await counted_everywhere([url_a, url_b], topic, 2)
                await viewer.close()
                for topic in TOPICS:
                    await counted_everywhere([url_a, url_b], topic, 1)
            finally:
                await viewer.close()
                await watcher.close()
    finally:
        cluster.cleanup()
