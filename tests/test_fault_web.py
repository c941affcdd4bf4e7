"""Breaking the web side on purpose, with real processes: a web instance killed while
clients watch, Redis restarted (with AOF) mid-stream, and subscribing with `since` while
events are published at full speed. Clients end with every acknowledged event once, in
order; nothing is acknowledged that was not stored."""

from __future__ import annotations

import asyncio
import random
import select
import signal
import socket
import time
from pathlib import Path

import pytest

from realtime.core.settings import Settings
from realtime.core.streamids import parse_id
from realtime.dev.embedded import RedisServer
from tests.helpers.clients import Collector, Watcher, post_events
from tests.helpers.feed import Feed
from tests.helpers.processes import ProcessGroup

pytestmark = pytest.mark.system

TOPICS = [f"web.t{n}" for n in range(5)]
QUIET = "web.quiet"  # no event until the web instance is gone


def fast(settings: Settings) -> Settings:
    return settings.with_overrides(lease_ms=1000, block_ms=200, redis_timeout_s=1.0)


def assert_each_once_in_order(watcher: Watcher, feed: Feed) -> None:
    for topic, ids in feed.acknowledged.items():
        got = watcher.topic_ids(topic)
        assert got == ids, f"{watcher.name} {topic}: {len(got)} delivered, {len(ids)} acknowledged"


def assert_acknowledged_once_in_order(watcher: Watcher, feed: Feed) -> None:
    """Every acknowledged event arrived, each once, in order. A request answered 503 may
    still have been stored (Redis went away before it could answer): its events may
    arrive too, but only in place, never twice, never more than were refused."""
    extra = 0
    for topic, ids in feed.acknowledged.items():
        got = watcher.topic_ids(topic)
        assert got == sorted(set(got), key=parse_id), f"{watcher.name} {topic}: out of order"
        missing = set(ids) - set(got)
        assert not missing, f"{watcher.name} {topic}: {len(missing)} acknowledged, not delivered"
        extra += len(got) - len(ids)
    assert extra <= feed.refused * feed.batch


async def test_clients_of_a_killed_web_instance_fail_over_and_resume(
    processes: ProcessGroup, settings: Settings
) -> None:
    settings = fast(settings)
    doomed = processes.web(settings)
    spare = processes.web(settings)
    processes.worker(settings)
    watchers = [
        await Watcher([doomed.url, spare.url], f"ws{n}", transports=["websocket"]).start(
            *TOPICS, QUIET
        )
        for n in range(3)
    ]
    watchers.append(
        await Watcher([doomed.url, spare.url], "polling", transports=["polling"]).start(
            *TOPICS, QUIET
        )
    )
    feed = Feed(spare.url, TOPICS, batch=20)

    posting = asyncio.create_task(feed.run(2000, pace_s=0.02))
    for watcher in watchers:
        await watcher.wait_for(400)
    # Normally all on the doomed instance (the first URL); under load a first attempt may
    # time out, and the watcher starts on the spare.
    moved = [w for w in watchers if w.client.url == doomed.url]
    assert moved
    doomed.kill()
    # Posted while they reconnect: a topic they had no event of resumes too (from the
    # position its subscribe ack gave).
    [quiet] = await post_events(spare.url, {"topic": QUIET, "data": {}})
    await posting
    for watcher in watchers:
        await watcher.wait_for_ids({**feed.last_ids(), QUIET: quiet})

    for watcher in watchers:
        assert_each_once_in_order(watcher, feed)
        assert watcher.topic_ids(QUIET) == [quiet]
        assert watcher.client.url == spare.url
        # (A polling client under load may reconnect once more: what counts is above.)
        assert watcher.client.stats.connects >= (2 if watcher in moved else 1)
        assert watcher.gaps == []
        await watcher.close()


async def test_redis_restarted_with_aof_mid_stream_loses_nothing_acknowledged(
    processes: ProcessGroup, prefix: str, tmp_path: Path
) -> None:
    redis = RedisServer(directory=tmp_path / "redis", appendonly=True).start()
    try:
        settings = fast(Settings(redis_url=redis.url, prefix=prefix, insecure=True))
        web = processes.web(settings)
        processes.worker(settings)
        watcher = await Watcher(web.url, "watcher").start(*TOPICS)
        # A refused batch is not retried: only what was acknowledged must arrive.
        feed = Feed(web.url, TOPICS, batch=10)
        # Open-ended (a slow worker start must not see the whole feed posted already):
        # stopped once events are taken again after the restart.
        posting = asyncio.create_task(feed.run(1_000_000, pace_s=0.01))

        await watcher.wait_for(200)
        redis.stop()  # SIGTERM: the AOF is flushed (everysec loses up to 1 s on a crash)
        await feed.wait_until(lambda: feed.refused >= 3, "503 while Redis is down")
        accepted_while_down = feed.accepted
        redis.start()
        await feed.wait_until(lambda: feed.accepted >= accepted_while_down + 200, "202 again")
        feed.stopped = True
        await posting

        assert feed.refused >= 3
        assert feed.accepted > accepted_while_down  # it took events again afterwards
        await watcher.wait_for_ids(feed.last_ids(), timeout=60)
        assert_acknowledged_once_in_order(watcher, feed)
        assert watcher.gaps == []
        await watcher.close()
    finally:
        processes.stop_all()
        redis.cleanup()


async def test_resume_while_publishing_at_full_speed_has_no_gap_and_no_duplicate(
    processes: ProcessGroup, settings: Settings
) -> None:
    """Raw clients (no client-side filtering) subscribe with `since` at random moments
    while events pour in; each must receive exactly the events after its `since`."""
    settings = fast(settings)
    web = processes.web(settings)
    processes.worker(settings)
    topic = "web.race"
    scout = await Collector("scout").connect(web.url)  # resume points: ids clients have had
    await scout.subscribe(topic)
    feed = Feed(web.url, [topic], batch=5)
    posting = asyncio.create_task(feed.run(3000))
    rng = random.Random(7)
    resumed: list[tuple[Collector, str]] = []
    for n in range(25):
        await scout.wait_for(100 * (n + 1))
        seen = scout.events
        since = seen[rng.randrange(max(0, len(seen) - 60), len(seen))]["id"]
        client = await Collector(f"resume-{n}").connect(web.url)
        ack = await client.subscribe(topic, since=since)
        assert ack == {"ok": True, "topic": topic, "recovered": True}
        resumed.append((client, since))
    await posting

    acknowledged = feed.acknowledged[topic]
    for client, since in resumed:
        await client.wait_for_id(acknowledged[-1])
        expected = acknowledged[acknowledged.index(since) + 1 :]
        assert [e["id"] for e in client.events] == expected, client.name
        assert client.log[0][0] == "ack"
        await client.close()
    assert [e["id"] for e in scout.events] == acknowledged
    await scout.close()


def _established(port: int, attempts: int) -> int:
    """Start `attempts` connections at once; how many the kernel completed within 0.5 s
    (a SYN that finds the listen queue full is dropped, and waits for a retry)."""
    sockets = []
    try:
        for _ in range(attempts):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            sockets.append(sock)
        time.sleep(0.5)
        _, writable, _ = select.select([], sockets, [], 0)
        return sum(1 for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
    finally:
        for sock in sockets:
            sock.close()


def test_a_reconnect_storm_waits_in_the_listen_queue_not_for_retries(
    processes: ProcessGroup, settings: Settings
) -> None:
    """Every client of an instance that went away reconnects at once. While the web is
    busy (here: stopped), the kernel completes up to REALTIME_LISTEN_BACKLOG connections
    for it; past that, connection attempts are dropped and clients retry a second or more
    later (aiohttp's default was 128)."""
    web = processes.web(settings)
    small = processes.web(settings, REALTIME_LISTEN_BACKLOG="50")
    for proc in (web, small):
        proc.signal(signal.SIGSTOP)
    try:
        assert _established(web.port, 600) == 600
        assert _established(small.port, 600) <= 51 + 1  # the kernel holds backlog + 1
    finally:
        for proc in (web, small):
            proc.signal(signal.SIGCONT)
