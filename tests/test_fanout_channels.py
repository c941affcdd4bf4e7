"""Interest-based fan-out against real Redis: each web instance listens only on the
channels of topics it has local subscribers for (reference counted), a first subscriber
misses nothing published while its channel was being subscribed, the listener's
reconnects lose nothing, python-socketio's own messages between instances still flow on
the common channel, and shutdown closes the listener cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from processors.worker.consumer import Consumer
from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.tasks import cancel_and_wait
from realtime.core.wire import UpdateEncoder
from realtime.dev.embedded import RedisServer
from realtime.fanout.channels import ChannelListener
from realtime.web.app import MANAGER, SIO
from tests.helpers.clients import Collector, post_events
from tests.helpers.feed import Feed
from tests.helpers.inprocess import serving
from tests.helpers.waiting import eventually


async def listeners(redis: Redis, settings: Settings, topic: str) -> int:
    """How many connections Redis has subscribed to the topic's channel."""
    [(_, count)] = await redis.pubsub_numsub(Keys(settings.prefix).topic_channel(topic))
    return int(count)


@pytest.mark.integration
async def test_an_instance_listens_on_a_topic_while_it_has_a_local_subscriber(
    settings: Settings, redis: Redis
) -> None:
    async with serving(settings) as (url, app):
        wanted = app[MANAGER].channels.interest.wanted
        clients = [await Collector(f"c{n}").connect(url) for n in range(12)]
        for n, client in enumerate(clients):
            await client.subscribe("ref.shared")
            await client.subscribe(f"ref.own{n}")
        assert await listeners(redis, settings, "ref.shared") == 1  # one connection, once
        assert await listeners(redis, settings, "ref.own3") == 1
        assert wanted == {"ref.shared", *(f"ref.own{n}" for n in range(12))}

        for client in clients[:6]:  # half unsubscribe, the other half disconnect
            assert await client.call("unsubscribe", {"topic": "ref.shared"}) == {
                "ok": True,
                "topic": "ref.shared",
            }
        assert "ref.shared" in wanted
        assert await listeners(redis, settings, "ref.shared") == 1
        for client in clients[6:]:
            await client.close()
        await eventually(
            lambda: _zero(redis, settings, "ref.shared", "ref.own6", "ref.own11"),
            "channels of topics without a local subscriber unsubscribed",
        )
        assert wanted == {f"ref.own{n}" for n in range(6)}

        again = await Collector("again").connect(url)  # a first subscriber once more
        await again.subscribe("ref.shared")
        assert await listeners(redis, settings, "ref.shared") == 1
        for client in [*clients[:6], again]:
            await client.close()


@pytest.mark.integration
async def test_concurrent_churn_settles_on_exactly_the_topics_with_subscribers(
    settings: Settings, redis: Redis, worker: None
) -> None:
    """Clients subscribe and unsubscribe all at once, in random orders: the instance ends
    up listening on exactly the topics someone still watches, and they get their events."""
    topics = [f"churn.t{n}" for n in range(6)]
    rng = random.Random(3)
    async with serving(settings) as (url, app):
        clients = [await Collector(f"c{n}").connect(url) for n in range(20)]

        async def churn(client: Collector) -> set[str]:
            mine: set[str] = set()
            for _ in range(8):
                topic = rng.choice(topics)
                if topic in mine:
                    await client.call("unsubscribe", {"topic": topic})
                    mine.discard(topic)
                else:
                    await client.subscribe(topic)
                    mine.add(topic)
            return mine

        kept = await asyncio.gather(*(churn(c) for c in clients))
        watched = set().union(*kept)
        assert app[MANAGER].channels.interest.wanted == watched
        for topic in topics:
            expected = 1 if topic in watched else 0

            async def settled(topic: str = topic, expected: int = expected) -> bool:
                return await listeners(redis, settings, topic) == expected

            await eventually(settled, f"{topic} subscribed {expected} time(s)")
        ids = await post_events(url, [{"topic": t, "data": {}} for t in topics])
        last = dict(zip(topics, ids, strict=True))
        for client, mine in zip(clients, kept, strict=True):
            for topic in mine:
                await client.wait_for_id(last[topic], topic)
        [marker] = await post_events(url, {"topic": topics[0], "data": {}})
        for client, mine in zip(clients, kept, strict=True):
            if topics[0] in mine:
                await client.wait_for_id(marker, topics[0])
            assert {e["topic"] for e in client.events} <= mine
        for client in clients:
            await client.close()


async def _zero(redis: Redis, settings: Settings, *topics: str) -> bool:
    return all([await listeners(redis, settings, t) == 0 for t in topics])


@pytest.mark.integration
async def test_instances_receive_only_the_topics_they_host(
    settings: Settings, redis: Redis, worker: None
) -> None:
    async with serving(settings) as (url_a, app_a), serving(settings) as (url_b, app_b):
        a = await Collector("a").connect(url_a)
        b = await Collector("b").connect(url_b)
        await a.subscribe("host.a")
        await b.subscribe("host.b")
        assert app_a[MANAGER].channels.interest.wanted == {"host.a"}
        assert app_b[MANAGER].channels.interest.wanted == {"host.b"}
        assert await listeners(redis, settings, "host.a") == 1
        assert await listeners(redis, settings, "host.b") == 1

        ids = await post_events(
            url_a, [{"topic": t, "data": {"n": n}} for n in range(20) for t in ("host.a", "host.b")]
        )
        await a.wait_for_id(ids[-2], "host.a")
        await b.wait_for_id(ids[-1], "host.b")
        assert [e["id"] for e in a.events] == ids[0::2]
        assert [e["id"] for e in b.events] == ids[1::2]
        await a.close()
        await b.close()


@pytest.mark.integration
async def test_a_first_subscriber_gets_exactly_what_follows_its_ack_under_full_load(
    settings: Settings, redis: Redis, worker: None
) -> None:
    """Each client is the instance's only subscriber of the topic, so each subscribe
    SUBSCRIBEs the channel while events pour in: whatever is published meanwhile is in
    the history it reads or arrives live, once."""
    topic = "first.race"
    async with serving(settings) as (url, app):
        feed = Feed(url, [topic], batch=5)
        posting = asyncio.create_task(feed.run(2500))
        wanted = app[MANAGER].channels.interest.wanted
        seen: list[tuple[str, list[str]]] = []
        for n in range(12):
            client = await Collector(f"first-{n}").connect(url)
            ack = await client.subscribe(topic)
            await client.wait_for(3 + n)
            await client.close()
            seen.append((ack["since"], [e["id"] for e in client.events]))
            await eventually(lambda: _zero(redis, settings, topic), "the channel let go")
            assert topic not in wanted
        await posting

    acknowledged = feed.acknowledged[topic]
    for since, got in seen:
        start = acknowledged.index(since) + 1 if since != "0-0" else 0
        assert got == acknowledged[start : start + len(got)], f"gap or duplicate after {since}"


@pytest.mark.integration
async def test_nothing_is_lost_when_the_listener_connection_is_cut_again_and_again(
    own_redis: RedisServer, prefix: str
) -> None:
    settings = Settings(
        redis_url=own_redis.url, prefix=prefix, insecure=True, block_ms=200, redis_timeout_s=2.0
    )
    redis = connect(settings)
    fanout = UpdateEncoder.of(settings)
    stop = asyncio.Event()
    working = asyncio.create_task(Consumer(redis, fanout, settings).run(stop))
    topics = ["cut.a", "cut.b", "cut.c"]
    try:
        async with serving(settings) as (url, app):
            client = await Collector("watcher").connect(url)
            for topic in topics:
                await client.subscribe(topic)
            feed = Feed(url, topics, batch=10)
            posting = asyncio.create_task(feed.run(3000, pace_s=0.005))
            for cut in range(1, 4):
                await feed.wait_until(lambda c=cut: feed.accepted >= 600 * c, "progress")  # type: ignore[misc]
                assert await redis.client_kill_filter(_type="pubsub") >= 1
            await posting
            for topic in topics:
                await client.wait_for_id(feed.acknowledged[topic][-1], topic, timeout=30)
            for topic in topics:
                assert [e["id"] for e in client.topic_events(topic)] == feed.acknowledged[topic]
            assert app[MANAGER].channels.connected
            await client.close()
    finally:
        stop.set()
        await asyncio.wait_for(working, 10)
        await redis.aclose()


@pytest.mark.integration
async def test_subscribing_while_redis_is_down_is_answered_and_recovers(
    own_redis: RedisServer, prefix: str
) -> None:
    """A new topic's channel cannot be confirmed while Redis is down: a resume is refused
    as unavailable, a plain subscribe goes on live-only; once Redis is back the listener
    SUBSCRIBEs every topic still wanted and events flow."""
    settings = Settings(
        redis_url=own_redis.url, prefix=prefix, insecure=True, block_ms=200, redis_timeout_s=1.0
    )
    redis = connect(settings)
    fanout = UpdateEncoder.of(settings)
    stop = asyncio.Event()
    working = asyncio.create_task(Consumer(redis, fanout, settings).run(stop))
    try:
        async with serving(settings) as (url, app):
            client = await Collector().connect(url)
            await client.subscribe("down.before")
            own_redis.stop()
            ack = await client.request("subscribe", {"topic": "down.resume", "since": "0-0"})
            assert ack["ok"] is False
            assert ack["error"]["code"] == "unavailable"
            assert await client.subscribe("down.plain") == {"ok": True, "topic": "down.plain"}
            assert app[MANAGER].channels.interest.wanted == {"down.before", "down.plain"}

            assert not app[MANAGER].channels.connected
            own_redis.start()

            async def reconnected() -> bool:
                return app[MANAGER].channels.connected

            await eventually(reconnected, "the listener back", 15)
            await client.subscribe("down.resume", since="0-0")
            ids = await post_events(
                url, [{"topic": t, "data": {}} for t in ("down.before", "down.plain")]
            )
            await client.wait_for_id(ids[0], "down.before")
            await client.wait_for_id(ids[1], "down.plain")
            await client.close()
    finally:
        stop.set()
        await asyncio.wait_for(working, 10)
        await redis.aclose()


@pytest.mark.integration
async def test_socketio_messages_between_instances_still_flow_on_the_common_channel(
    settings: Settings,
) -> None:
    async with serving(settings) as (_, app_a), serving(settings) as (url_b, _):
        client = await Collector("on-b").connect(url_b)
        notes: asyncio.Queue[Any] = asyncio.Queue()
        client.client.on("note", notes.put)
        gone = asyncio.Event()
        client.client.on("disconnect", lambda *_: gone.set())
        await client.subscribe("common.t")
        sid = client.client.get_sid("/")

        await app_a[SIO].emit("note", {"to": "sid"}, to=sid)  # to a client of another instance
        assert await asyncio.wait_for(notes.get(), 10) == {"to": "sid"}
        await app_a[SIO].emit("note", {"to": "room"}, room="common.t")  # not an `update`
        assert await asyncio.wait_for(notes.get(), 10) == {"to": "room"}
        # An `update` emitted by a web instance goes on the topic's channel.
        event = {"topic": "common.t", "id": "7-0", "ts": 7, "data": {}}
        await app_a[SIO].emit("update", [event], room="common.t")
        await client.wait_for_id("7-0")
        assert client.events == [event]

        await app_a[SIO].disconnect(sid)  # disconnect a client of another instance
        await asyncio.wait_for(gone.wait(), 10)


@pytest.mark.integration
async def test_shutdown_closes_the_listener_promptly_and_quietly(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=own_redis.url, prefix=prefix, insecure=True)
    redis = connect(settings)
    try:
        async with asyncio.timeout(10):
            async with serving(settings) as (url, _):
                client = await Collector().connect(url)
                await client.subscribe("bye.a")
                await client.subscribe("bye.b")
                assert await redis.client_list(_type="pubsub")
                await client.close()  # its UNSUBSCRIBE may be under way while we stop

        async def closed() -> bool:  # (Redis notices a closed socket a moment later)
            return await redis.client_list(_type="pubsub") == []

        await eventually(closed, "the listener's connection closed", 5)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await redis.aclose()


@pytest.mark.integration
async def test_the_listener_starts_over_after_an_unexpected_error(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    listener = ChannelListener(settings)
    listener.want("oops.t", True)
    calls: list[int] = []

    def catch_up() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ValueError("a bug in the catch-up")

    listener.on_subscribed = catch_up
    channel = Keys(settings.prefix).topic_channel("oops.t")
    async with contextlib.aclosing(listener.messages()) as messages:
        received = asyncio.ensure_future(anext(messages))
        await eventually(lambda: _ready(listener, calls), "the second subscription")
        await redis.publish(channel, b"after")
        assert await asyncio.wait_for(received, 10) == b"after"
    assert "fan-out listener failed" in caplog.text


async def _ready(listener: ChannelListener, calls: list[int]) -> bool:
    return len(calls) == 2 and listener.connected


@pytest.mark.integration
async def test_an_idle_listener_pings_redis(
    settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its reads block without a timeout; the PINGs are what would fail on a dead
    connection."""
    monkeypatch.setattr("realtime.fanout.channels.IDLE_PING_S", 0.05)
    async with serving(settings) as (url, _):
        client = await Collector().connect(url)
        await client.subscribe("idle.t")

        async def pinged() -> bool:
            listening = await redis.client_list(_type="pubsub")
            return any(c["cmd"] == "ping" for c in listening)

        await eventually(pinged, "a PING from the listener", 5)
        await client.close()


@pytest.mark.integration
async def test_a_subscription_not_confirmed_in_time_is_an_error(settings: Settings) -> None:
    listener = ChannelListener(settings.with_overrides(redis_timeout_s=0.2))  # not listening
    listener.want("nobody.home", True)
    with pytest.raises(RedisError):
        await listener.ready("nobody.home")
    assert listener._waiters == {}


@pytest.mark.unit
async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            swallowed.set()  # as Python 3.11's wait_for may do
        await asyncio.sleep(60)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, again_after_s=0.01), 5)
    assert swallowed.is_set()
    assert task.cancelled()
