"""Redis Cluster mode with real processes: a 3-primary cluster on loopback, two web
instances and two workers; topics whose partitions live on every shard; clients on
both instances get every accepted event, once, in order. Prints how the load spread
over the shards (`pytest tests/test_cluster.py -s`): the figures in the README."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import redis

from realtime.keys import Keys
from realtime.settings import Settings
from realtime.topics import partition_of
from tests.helpers.clients import Watcher
from tests.helpers.feed import Feed
from tests.helpers.processes import ProcessGroup
from tests.helpers.redis_topology import ClusterSet

TOPICS = [f"cl.t{n}" for n in range(12)]
PARTITIONS = 6


def local_tcp_ports(pid: int) -> set[int]:
    """The local ports of a process's TCP sockets (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def shard_figures(
    cluster: ClusterSet, processes: dict[str, set[int]]
) -> list[dict[str, int | str]]:
    """Per shard: its shard channels, their subscriptions, and each process's
    connections to it (by the process's local TCP ports)."""
    figures: list[dict[str, int | str]] = []
    for node in cluster.nodes:
        with redis.Redis(port=node.port, decode_responses=True) as admin:
            channels = admin.execute_command("PUBSUB", "SHARDCHANNELS")
            subscribers = admin.execute_command("PUBSUB", "SHARDNUMSUB", *channels)
            stats = admin.info("commandstats")
            peers = [int(c["addr"].rsplit(":", 1)[1]) for c in admin.client_list()]
            per_process = {
                name: sum(1 for port in peers if port in ports) for name, ports in processes.items()
            }
            figures.append(
                {
                    "port": node.port,
                    "shard_channels": len(channels),
                    "subscriptions": sum(int(n) for n in subscribers[1::2]),
                    "connections": ", ".join(f"{n} {c}" for n, c in per_process.items()),
                    "spublish": stats.get("cmdstat_spublish", {}).get("calls", 0),
                    "publish": stats.get("cmdstat_publish", {}).get("calls", 0),
                    "xadd": stats.get("cmdstat_xadd", {}).get("calls", 0),
                }
            )
    return figures


async def test_two_web_instances_and_two_workers_on_a_cluster_deliver_everything_in_order(
    processes: ProcessGroup, prefix: str, tmp_path: Path
) -> None:
    cluster = ClusterSet(tmp_path / "cluster").start()
    try:
        settings = Settings(
            redis_url=cluster.url,
            prefix=prefix,
            insecure=True,
            redis_cluster=True,
            partitions=PARTITIONS,
            lease_ms=1000,
            block_ms=200,
            redis_timeout_s=2.0,
        )
        keys = Keys.of(settings)
        homes = {t: cluster.node_of(keys.ingest(partition_of(t, PARTITIONS))).port for t in TOPICS}
        assert len(set(homes.values())) == len(cluster.nodes), "topics must cover every shard"
        for topic in TOPICS:  # a topic's history and channel sit with its partition
            ingest = keys.ingest(partition_of(topic, PARTITIONS))
            assert cluster.node_of(keys.topic(topic)) is cluster.node_of(ingest)

        webs = [processes.web(settings), processes.web(settings)]
        workers = [processes.worker(settings), processes.worker(settings)]
        watchers = [
            await Watcher(web.url, f"watcher@web{n}").start(*TOPICS) for n, web in enumerate(webs)
        ]
        feeds = [Feed(webs[0].url, TOPICS[:6], batch=6), Feed(webs[1].url, TOPICS[6:], batch=6)]
        # One event per topic first, delivered: the workers own every partition by then,
        # so what follows goes through the live path, batch after batch.
        await asyncio.gather(*[feed.run(6) for feed in feeds])
        for watcher in watchers:
            await watcher.wait_for_ids(
                {t: ids[-1] for f in feeds for t, ids in f.acknowledged.items()}
            )
        await asyncio.gather(*[feed.run(600, pace_s=0.01) for feed in feeds])

        ports = {
            name: local_tcp_ports(proc.process.pid)
            for name, proc in [("web0", webs[0]), ("web1", webs[1]),
                               ("worker0", workers[0]), ("worker1", workers[1])]
            if proc.process is not None
        }  # fmt: skip
        acknowledged = {t: ids for feed in feeds for t, ids in feed.acknowledged.items()}
        assert sum(map(len, acknowledged.values())) == 1200
        last = {t: ids[-1] for t, ids in acknowledged.items()}
        for watcher in watchers:
            await watcher.wait_for_ids(last, timeout=60)
            for topic, ids in acknowledged.items():
                assert watcher.topic_ids(topic) == ids, f"{watcher.name} {topic}"
            assert watcher.gaps == []

        figures = shard_figures(cluster, ports)  # while the clients are still subscribed
        for watcher in watchers:
            await watcher.close()
        print("\ncluster: 3 shards, 2 web instances, 2 workers, 6 partitions, 12 topics")
        for f in figures:
            print("  shard :{port}: {shard_channels} shard channels, {subscriptions} "
                  "subscriptions, SPUBLISH {spublish}, PUBLISH {publish}, XADD {xadd}; "
                  "connections: {connections}".format(**f))  # fmt: skip
        for f in figures:
            assert f["publish"] == 0  # nothing broadcast over the cluster bus
            assert f["spublish"] > 0  # every shard carried some of the fan-out
            # both web instances have clients of every topic: both listen to every channel
            assert f["subscriptions"] == len(webs) * f["shard_channels"]
        assert sum(f["shard_channels"] for f in figures) == len(TOPICS)  # one per topic
    finally:
        processes.stop_all()
        cluster.cleanup()
