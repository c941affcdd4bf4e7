"""Redis Cluster mode with real processes: a 3-primary cluster on loopback, two web
instances and two workers; topics whose partitions live on every shard; clients on
both instances get every accepted event, once, in order. Prints how the load spread
over the shards (`pytest tests/test_cluster.py -s`): the figures in docs/scaling.md."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from processors.worker.dlq import run_dlq
from realtime.cli import build_parser
from realtime.core import jsoncodec
from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.metrics import WebMetrics
from realtime.core.settings import Settings
from realtime.core.streamids import parse_id
from realtime.core.tasks import cancel_and_wait
from realtime.core.topics import partition_of
from realtime.fanout.sharded import ShardedChannelListener
from tests.helpers.clients import Collector, Watcher, post_events
from tests.helpers.feed import Feed
from tests.helpers.processes import ProcessGroup
from tests.helpers.redis_topology import ClusterSet, wait_until
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.system

TOPICS = [f"cl.t{n}" for n in range(12)]
PARTITIONS = 6


def cluster_settings(cluster: ClusterSet, prefix: str) -> Settings:
    """Every process on the cluster, with short leases so partitions move quickly."""
    return Settings(
        redis_url=cluster.url,
        prefix=prefix,
        insecure=True,
        redis_cluster=True,
        partitions=PARTITIONS,
        lease_ms=1000,
        block_ms=200,
        redis_timeout_s=2.0,
    )


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


async def all_topics(url: str) -> AsyncIterator[dict[str, Any]]:
    """Every topic of the directory, page by page (3 a page)."""
    cursor = None
    async with aiohttp.ClientSession() as http:
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            async with http.get(f"{url}/api/v1/topics", params=params) as response:
                assert response.status == 200, await response.text()
                page = await response.json()
            for topic in page["topics"]:
                yield topic
            cursor = page["next"]
            if cursor is None:
                return


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
        settings = cluster_settings(cluster, prefix)
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
        # The topic directory, read across the shards' partitions: every topic, once,
        # with its last event.
        assert {t["topic"]: t["last_id"] async for t in all_topics(webs[1].url)} == last

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

        # The clients are gone: the instances SUNSUBSCRIBE every topic (interest-based).
        await asyncio.to_thread(
            wait_until,
            lambda: sum(f["subscriptions"] for f in shard_figures(cluster, {})) == 0,
            "no shard subscriptions left",
        )
    finally:
        processes.stop_all()
        cluster.cleanup()


async def test_a_session_recovers_on_another_instance_on_a_cluster(
    processes: ProcessGroup, prefix: str, tmp_path: Path
) -> None:
    """Connection-state recovery's session records and logs are cluster keys too: after
    a SIGKILL of its instance, the Python client fails over with its resume token and
    gets its session back on the other, every topic whole, nothing twice."""
    cluster = ClusterSet(tmp_path / "cluster").start()
    try:
        settings = cluster_settings(cluster, prefix)
        web, other = processes.web(settings), processes.web(settings)
        processes.worker(settings)
        watcher = await Watcher([web.url, other.url]).start(*TOPICS)
        assert watcher.client.url == web.url

        async def post_round(first: int) -> dict[str, list[str]]:
            events = [{"topic": t, "data": {"n": n}} for t in TOPICS for n in (first, first + 1)]
            ids = await post_events(other.url, events)
            return {t: ids[2 * i : 2 * i + 2] for i, t in enumerate(TOPICS)}

        before = await post_round(0)
        await watcher.wait_for_ids({t: ids[-1] for t, ids in before.items()})
        web.kill()
        missed = await post_round(2)
        await watcher.wait_for_ids({t: ids[-1] for t, ids in missed.items()}, timeout=60)
        client = watcher.client
        assert client.stats.recovered == 1, client.stats
        assert client.url == other.url
        for topic in TOPICS:
            assert watcher.topic_ids(topic) == before[topic] + missed[topic], topic
        assert (client.stats.duplicates, client.stats.gaps) == (0, 0)
        await watcher.close()
    finally:
        processes.stop_all()
        cluster.cleanup()


PIPELINES = """
pipelines:
  - name: metrics
    match: "metrics.*"
    windows: {sizes: [1s], lateness: 300ms}
  - name: orders
    match: orders
    routes: [{to: "orders.by_region.{region}"}]
"""
T0 = 1_700_000_000_000


def elsewhere_topic(cluster: ClusterSet, keys: Keys, source: str, target: str) -> bool:
    """Whether `target`'s partition lives on another shard than `source`'s."""
    p = keys.partitions
    home = cluster.node_of(keys.ingest(partition_of(source, p)))
    return cluster.node_of(keys.ingest(partition_of(target, p))) is not home


async def test_pipelines_across_shards_and_dead_letters_on_a_cluster(
    processes: ProcessGroup, prefix: str, tmp_path: Path
) -> None:
    """A window output and a routed copy whose topics live on other shards than their
    source (the writes outside the partition's slot), and a dead letter in its
    partition's stream, listed and dropped by `realtime dlq`."""
    cluster = ClusterSet(tmp_path / "cluster").start()
    pipelines = tmp_path / "pipelines.yaml"
    pipelines.write_text(PIPELINES)
    try:
        settings = Settings(
            redis_url=cluster.url,
            prefix=prefix,
            insecure=True,
            redis_cluster=True,
            partitions=PARTITIONS,
            block_ms=200,
            pipelines_file=str(pipelines),
        )
        keys = Keys.of(settings)
        metric = next(
            t
            for t in (f"metrics.m{n}" for n in range(100))
            if elsewhere_topic(cluster, keys, t, f"{t}:1s")
        )
        region = next(
            r
            for r in (f"r{n}" for n in range(100))
            if elsewhere_topic(cluster, keys, "orders", f"orders.by_region.{r}")
        )
        web = processes.web(settings, REALTIME_PIPELINES=str(pipelines))
        processes.worker(settings, REALTIME_PIPELINES=str(pipelines))
        client = await Collector("outputs").connect(web.url)
        await client.subscribe(f"{metric}:1s")
        await client.subscribe(f"orders.by_region.{region}")

        values = [float(n) for n in range(14)]  # ts T0 .. T0+1300: the first window closes
        events: list[dict[str, Any]] = [
            {"topic": metric, "ts": T0 + 100 * n, "data": {"value": v}}
            for n, v in enumerate(values)
        ]
        events.append({"topic": "orders", "data": {"region": region, "n": 1}})
        await post_events(web.url, events)

        routed_topic = f"orders.by_region.{region}"
        await client.wait_until(
            lambda: bool(client.topic_events(f"{metric}:1s") and client.topic_events(routed_topic)),
            "window output and routed copy",
        )
        window = client.topic_events(f"{metric}:1s")[0]
        assert window["id"] == f"{T0 + 1000}-0"
        assert (window["data"]["count"], window["data"]["sum"]) == (10, sum(values[:10]))
        [routed] = client.topic_events(routed_topic)
        assert routed["data"] == {"region": region, "n": 1}
        await client.close()
        # The topic directory lists each, the window output written outside its
        # partition's slot included, with its last event.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{web.url}/api/v1/topics", params={"limit": "1"}) as first,
        ):
            assert first.status == 200, await first.text()
            listed = (await first.json())["topics"]
        directory = {t["topic"]: t["last_id"] async for t in all_topics(web.url)}
        assert listed[0]["topic"] == min(directory)
        assert parse_id(directory[f"{metric}:1s"]) >= parse_id(window["id"])  # (more may close)
        assert directory[routed_topic] == routed["id"]
        assert {metric, "orders"} <= set(directory)

        # A malformed entry is dead-lettered at once, into its partition's stream.
        redis_client = connect(settings)
        try:
            await redis_client.xadd(keys.ingest(3), {"bogus": "1"})
            deadline = asyncio.get_running_loop().time() + 20
            while not await redis_client.xlen(keys.dead_letters(3)):
                assert asyncio.get_running_loop().time() < deadline, "no dead letter"
                await asyncio.sleep(0.05)
        finally:
            await redis_client.aclose()
        out = io.StringIO()
        args = build_parser().parse_args(["dlq", "list", "--json"])
        assert await run_dlq(settings, args, out) == 0
        [letter] = [jsoncodec.loads(line) for line in out.getvalue().splitlines()]
        assert letter["stream"] == keys.ingest(3)
        out = io.StringIO()
        assert (
            await run_dlq(settings, build_parser().parse_args(["dlq", "drop", "--all"]), out) == 0
        )
        assert "dropped 1" in out.getvalue()
    finally:
        processes.stop_all()
        cluster.cleanup()


async def test_the_cluster_fan_out_listener_counts_its_redis_errors_and_reconnects(
    tmp_path: Path, prefix: str
) -> None:
    """The listener loop is shared with the classic one, metrics included: cutting the
    shard connections moves `realtime_redis_errors` and `realtime_redis_reconnects`
    for the fan-out, and the listener subscribes again."""
    cluster = ClusterSet(tmp_path / "cluster").start()
    listener = ShardedChannelListener(
        Settings(redis_url=cluster.url, prefix=prefix, redis_cluster=True, redis_timeout_s=2.0)
    )
    metrics = WebMetrics()
    listener.metrics = metrics

    def count(name: str) -> float:
        return metrics.registry.get_sample_value(name, {"component": "fanout"}) or 0.0

    async def consume() -> None:
        async with contextlib.aclosing(listener.messages()) as messages:
            async for _ in messages:
                pass

    listener.want(TOPICS[0], True)
    reading = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(listener.ready(TOPICS[0]), 10)
        assert count("realtime_redis_errors_total") == 0
        for node in cluster.nodes:
            with redis.Redis(port=node.port) as admin:
                admin.client_kill_filter(_type="pubsub")
        await eventually(lambda: count("realtime_redis_errors_total") >= 1, "fan-out error count")
        await eventually(
            lambda: count("realtime_redis_reconnects_total") >= 1 and listener.connected,
            "fan-out reconnect count",
        )
        await asyncio.wait_for(listener.ready(TOPICS[0]), 10)
    finally:
        await cancel_and_wait(reading)
        cluster.cleanup()
