"""Presence against real Redis, two web apps (two instances) in the test's loop, real
python-socketio clients: exact counts as clients come and go, `presence` events coalesced,
SSE readers counted, a dead instance reaped, `GET /api/v1/topics/{topic}/presence` and
its auth."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.metrics import WebMetrics
from realtime.core.settings import IngestKeySpec, Settings
from realtime.delivery.presence import Presence
from realtime.web.app import METRICS
from tests.helpers.clients import Collector
from tests.helpers.inprocess import serving
from tests.helpers.presence import PresenceWatcher, counted_everywhere, http_count
from tests.helpers.tokens import SECRET, hs256

pytestmark = pytest.mark.integration

TOPIC = "metrics.watched"


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.with_overrides(presence_flush_ms=20.0, presence_ttl_s=1.5)


@contextlib.asynccontextmanager
async def clients(url: str, n: int, topic: str = TOPIC) -> AsyncIterator[list[Collector]]:
    opened = [await Collector(f"viewer{i}").connect(url) for i in range(n)]
    try:
        for c in opened:
            await c.subscribe(topic)
        yield opened
    finally:
        for c in opened:
            await c.close()


async def get_count(
    url: str, topic: str = TOPIC, token: str | None = None, query: str = ""
) -> tuple[int, Any]:
    return await http_count(url, topic, token, query)


async def test_counts_stay_exact_across_two_instances_as_clients_come_and_go(
    fast: Settings,
) -> None:
    async with serving(fast) as (url_a, app_a), serving(fast) as (url_b, _):
        watcher = PresenceWatcher()
        await watcher.connect(url_a)
        try:
            ack = await watcher.subscribe(TOPIC, presence=True)
            assert ack["presence"]["count"] == 1  # the watcher itself
            assert isinstance(ack["presence"]["at"], int)
            async with clients(url_b, 3):
                await watcher.wait_count(4)
                await counted_everywhere([url_a, url_b], TOPIC, 4)
                async with clients(url_a, 2):
                    await watcher.wait_count(6)
                    await counted_everywhere([url_a, url_b], TOPIC, 6)
                await watcher.wait_count(4)
            await watcher.wait_count(1)
            await counted_everywhere([url_a, url_b], TOPIC, 1)
            metrics = app_a[METRICS]
            assert metrics.registry.get_sample_value("realtime_presence_viewers") == 1.0
            assert metrics.registry.get_sample_value("realtime_presence_updates_published_total")
            # at most one event per second per topic (the server's own clock, `at`)
            ats = [event["at"] for event in watcher.presence]
            assert all(later - earlier >= 950 for earlier, later in itertools.pairwise(ats))
            assert all(event["topic"] == TOPIC for event in watcher.presence)
        finally:
            await watcher.close()


async def test_a_subscribe_without_presence_gets_no_presence_events(fast: Settings) -> None:
    async with serving(fast) as (url, _):
        plain = PresenceWatcher("plain")
        await plain.connect(url)
        watcher = PresenceWatcher()
        await watcher.connect(url)
        try:
            ack = await plain.subscribe(TOPIC)
            assert "presence" not in ack
            await watcher.subscribe(TOPIC, presence=True)
            async with clients(url, 1):
                await watcher.wait_count(3)
            await watcher.wait_count(2)
            assert plain.presence == []
            refused = await plain.call("subscribe", {"topic": TOPIC, "presence": "yes"})
            assert refused["ok"] is False
            assert "presence" in refused["error"]["fields"]
        finally:
            await plain.close()
            await watcher.close()


async def test_sse_readers_count_as_viewers(fast: Settings) -> None:
    async with serving(fast) as (url, _):
        watcher = PresenceWatcher()
        await watcher.connect(url)
        try:
            await watcher.subscribe(TOPIC, presence=True)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{url}/api/v1/stream?topic={TOPIC}") as response,
            ):
                assert response.status == 200
                await watcher.wait_count(2)
            await watcher.wait_count(1)
        finally:
            await watcher.close()


async def test_a_dead_instance_drops_out_of_the_count(fast: Settings, redis: Redis) -> None:
    """An instance that wrote its count and then stopped (as a SIGKILL leaves it): once its
    heartbeat expires it no longer counts, and the watchers are told."""
    ghost = Presence(redis, Keys.of(fast), "ghost", lambda sid, frame: None, WebMetrics(),
                     ttl_s=fast.presence_ttl_s)  # fmt: skip
    ghost.viewers(TOPIC, 5)
    await ghost.tick()  # heartbeat and count written; then it never runs again
    async with serving(fast) as (url, _):
        watcher = PresenceWatcher()
        await watcher.connect(url)
        try:
            ack = await watcher.subscribe(TOPIC, presence=True)
            started = time.monotonic()
            assert ack["presence"]["count"] == 6
            await watcher.wait_count(1, timeout=fast.presence_ttl_s + 10)
            # bounded (generous for a busy machine): the TTL, then a reaper's round
            assert time.monotonic() - started < fast.presence_ttl_s + 5
            keys = Keys.of(fast)
            assert await redis.hgetall(keys.presence(TOPIC)) != {}  # the live instance's
            assert b"ghost" not in await redis.hgetall(keys.presence(TOPIC))
            assert await redis.zscore(keys.presence_instances(), "ghost") is None
            assert not await redis.exists(keys.presence_topics("ghost"))
        finally:
            await watcher.close()


async def test_a_stopped_instance_leaves_no_records(fast: Settings, redis: Redis) -> None:
    keys = Keys.of(fast)
    async with serving(fast) as (url, _), clients(url, 2):
        assert (await get_count(url))[1]["count"] == 2

        async def written() -> bool:
            return sum(map(int, (await redis.hgetall(keys.presence(TOPIC))).values())) == 2

        deadline = time.monotonic() + 10
        while not await written():
            assert time.monotonic() < deadline, "counts not written"
            await asyncio.sleep(0.02)
    assert await redis.hgetall(keys.presence(TOPIC)) == {}
    assert await redis.zcard(keys.presence_instances()) == 0


async def test_reading_presence_takes_a_subscriber_token_or_a_publish_key(
    settings: Settings,
) -> None:
    metrics_key = "metrics-key-0123456789abcdef"
    secured = settings.with_overrides(
        jwt_secret=SECRET,
        insecure=False,
        ingest_keys=(IngestKeySpec(metrics_key, ("metrics.*",)),),
    )
    async with serving(secured) as (url, _):
        status, body = await get_count(url)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body = await get_count(url, token="not-a-key-or-token")
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body = await get_count(url, token=hs256(["events.*"]))
        assert (status, body["error"]["code"]) == (403, "forbidden")
        assert await get_count(url, token=hs256(["metrics.*"])) == (
            200,
            {"topic": TOPIC, "count": 0},
        )
        assert (await get_count(url, token=metrics_key))[0] == 200
        status, body = await get_count(url, "events.orders", token=metrics_key)
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body = await get_count(url, "Not_A_Topic", token=hs256(["*"]))
        assert (status, body["error"]["code"]) == (400, "invalid")
        # Failed publish keys are throttled here as at ingest: guessing is locked out.
        statuses = [(await get_count(url, token=f"guess-{n}"))[0] for n in range(8)]
        assert statuses[0] == 401
        assert 429 in statuses


async def test_reading_presence_is_open_when_subscribing_is(settings: Settings) -> None:
    async with serving(settings) as (url, _):
        assert await get_count(url) == (200, {"topic": TOPIC, "count": 0})


async def test_member_lists_for_tokens_that_may_see_them(settings: Settings) -> None:
    """Who watches, by the tokens' `sub`, across two instances: for a token with the
    claim presence_members (events and ack) and for a publish key (HTTP); a token
    without the claim gets the count only."""
    metrics_key = "metrics-key-0123456789abcdef"
    secured = settings.with_overrides(
        jwt_secret=SECRET,
        insecure=False,
        ingest_keys=(IngestKeySpec(metrics_key, ("metrics.*",)),),
        presence_flush_ms=20.0,
    )
    alice_token = hs256(["metrics.*"], sub="alice", presence_members=True)
    bob_token = hs256(["metrics.*"], sub="bob")
    async with serving(secured) as (url_a, _), serving(secured) as (url_b, _):
        alice, bob = PresenceWatcher("alice"), PresenceWatcher("bob")
        await alice.client.connect(url_a, auth={"token": alice_token}, wait_timeout=10)
        await bob.client.connect(url_b, auth={"token": bob_token}, wait_timeout=10)
        try:
            ack = await alice.subscribe(TOPIC, presence=True)
            assert ack["presence"]["members"] == ["alice"]
            assert ack["presence"]["more_members"] is False
            ack = await bob.subscribe(TOPIC, presence=True)
            assert ack["presence"]["count"] in (1, 2)  # alice's, once instance A flushed
            assert "members" not in ack["presence"]

            def listed(names: list[str]) -> Callable[[], bool]:
                return lambda: bool(alice.presence) and alice.presence[-1]["members"] == names

            await alice.wait_until(listed(["alice", "bob"]), "bob listed")
            if ack["presence"]["count"] == 1:  # instance A had not flushed alice yet
                await bob.wait_count(2)
            assert all("members" not in event for event in bob.presence)
            status, body = await get_count(url_b, TOPIC, metrics_key, "members=1")
            assert (status, body["members"], body["count"]) == (200, ["alice", "bob"], 2)
            status, body = await get_count(url_a, TOPIC, alice_token, "members=1")
            assert (status, body["members"]) == (200, ["alice", "bob"])
            status, body = await get_count(url_a, TOPIC, bob_token, "members=1")
            assert (status, body["error"]["code"]) == (403, "forbidden")
            status, body = await get_count(url_a, TOPIC, alice_token, "members=yes")
            assert (status, body["error"]["code"]) == (400, "invalid")
            await bob.close()
            await alice.wait_until(listed(["alice"]), "bob gone from the list")
            assert alice.presence[-1]["count"] == 1
        finally:
            await alice.close()
            await bob.close()


async def command_calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_the_viewers_of_a_topic_are_written_in_one_command(
    fast: Settings, redis: Redis
) -> None:
    """A connect storm brings a new `sub` per connection: a flush writes a topic's new
    viewers in one HSET and those gone in one HDEL, not a command each."""
    keys = Keys.of(fast)
    presence = Presence(redis, keys, "solo", lambda sid, frame: None, WebMetrics(),
                        ttl_s=fast.presence_ttl_s)  # fmt: skip
    for n in range(5):
        presence.joined(f"sid-{n}", TOPIC, f"user-{n}")
    hsets = await command_calls(redis, "hset")
    await presence.flush(presence.clock())
    members = await redis.hgetall(keys.presence_members(TOPIC, "solo"))
    assert members == {f"user-{n}".encode(): b"1" for n in range(5)}
    assert await command_calls(redis, "hset") - hsets <= 2  # the members', the count's
    for n in range(3):
        presence.left(f"sid-{n}", TOPIC)
    hdels = await command_calls(redis, "hdel")
    await presence.flush(presence.clock())
    members = await redis.hgetall(keys.presence_members(TOPIC, "solo"))
    assert members == {b"user-3": b"1", b"user-4": b"1"}
    assert await command_calls(redis, "hdel") - hdels <= 2
