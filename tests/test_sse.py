"""`GET /api/v1/stream` against real Redis and a real worker, read with aiohttp as curl
or a script would: live events, exact resume with `Last-Event-ID` on every topic, a gap,
auth, the heartbeat, a slow reader cut at its bound, the drain's `retry:`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from processors.worker.consumer import Consumer
from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.wire import UpdateEncoder
from realtime.dev.embedded import RedisServer
from realtime.web.app import DELIVERY, DRAIN, METRICS
from tests.helpers.clients import post_events
from tests.helpers.feed import Feed
from tests.helpers.history import write_history
from tests.helpers.inprocess import running_app, serving
from tests.helpers.sse import Message, messages
from tests.helpers.tokens import SECRET, hs256
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

TIMEOUT = aiohttp.ClientTimeout(total=30)


async def updates_until(stream: AsyncIterator[Message], want: int, got: list[Message]) -> None:
    """Read until `want` update messages are in `got` (other messages are kept too)."""
    async with asyncio.timeout(20):
        while sum(m.event == "update" for m in got) < want:
            got.append(await anext(stream))


def events(got: list[Message]) -> list[dict[str, Any]]:
    return [m.data for m in got if m.event == "update"]


async def open_stream(
    session: aiohttp.ClientSession, url: str, query: str, *, fresh: bool = True, **headers: str
) -> tuple[aiohttp.ClientResponse, AsyncIterator[Message]]:
    """Open a stream; a `fresh` one (no backlog) starts with its position."""
    response = await session.get(f"{url}/api/v1/stream?{query}", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Transfer-Encoding"] == "chunked"
    stream = messages(response)
    if not fresh:
        return response, stream
    first = await anext(stream)  # the start position, before any event
    assert (first.event, first.data) == ("message", None)
    assert first.id is not None
    return response, stream


async def test_live_events_of_every_topic_arrive_with_a_position_of_all(
    base_url: str, worker: None
) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        response, stream = await open_stream(session, base_url, "topic=s.a&topic=s.b")
        sent = [{"topic": t, "data": {"n": n}} for n in range(3) for t in ("s.a", "s.b")]
        ids = await post_events(base_url, sent)
        got: list[Message] = []
        await updates_until(stream, 6, got)
        for topic in ("s.a", "s.b"):  # in order per topic (topics may interleave)
            assert [(e["id"], e["data"]) for e in events(got) if e["topic"] == topic] == [
                (i, e["data"]) for i, e in zip(ids, sent, strict=True) if e["topic"] == topic
            ]
        assert got[-1].id == f"s.a={ids[4]},s.b={ids[5]}"  # every topic's last id
        assert set(events(got)[0]) == {"topic", "id", "ts", "data"}
        response.close()


async def test_a_reader_that_reconnects_with_last_event_id_gets_every_event_once(
    base_url: str, worker: None
) -> None:
    """Disconnected mid-stream while events keep coming on both topics; the reconnect
    with the last `id:` it saw gets exactly the rest, on every topic."""
    topics = ("s.x", "s.y")
    posted: list[str] = []
    stop = asyncio.Event()

    async def produce() -> None:
        n = 0
        async with aiohttp.ClientSession() as session:
            while not stop.is_set() or n < 40:
                batch = [{"topic": t, "data": {"n": n}} for t in topics]
                posted.extend(await post_events(base_url, batch, session))
                n += 1
                if n >= 40:
                    return
                await asyncio.sleep(0.01)

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        response, stream = await open_stream(session, base_url, "topic=s.x&topic=s.y")
        producer = asyncio.create_task(produce())
        got: list[Message] = []
        await updates_until(stream, 10, got)
        last_id = [m.id for m in got if m.id is not None][-1]
        response.close()  # gone mid-stream, while events keep coming
        await asyncio.sleep(0.1)
        assert last_id is not None
        _, stream = await open_stream(
            session, base_url, "topic=s.x&topic=s.y", fresh=False, **{"Last-Event-ID": last_id}
        )
        await producer
        await updates_until(stream, len(posted), got)
    for topic in topics:
        received = [e["id"] for e in events(got) if e["topic"] == topic]
        assert received == posted[topics.index(topic) :: 2], topic  # all, once, in order


async def test_nothing_is_lost_when_the_fanout_listener_is_cut_under_a_stream(
    own_redis: RedisServer, prefix: str
) -> None:
    """The instance's pub/sub connection is killed three times while events flow on
    three topics: the stream is caught up from history each time, every event once."""
    settings = Settings(
        redis_url=own_redis.url, prefix=prefix, insecure=True, block_ms=200, redis_timeout_s=2.0
    )
    redis = connect(settings)
    stop = asyncio.Event()
    working = asyncio.create_task(Consumer(redis, UpdateEncoder.of(settings), settings).run(stop))
    topics = ["cut.a", "cut.b", "cut.c"]
    try:
        async with serving(settings) as (url, _), aiohttp.ClientSession(timeout=TIMEOUT) as session:
            response, stream = await open_stream(
                session, url, "&".join(f"topic={t}" for t in topics)
            )
            got: list[Message] = []
            reading = asyncio.create_task(updates_until(stream, 1500, got))
            feed = Feed(url, topics, batch=10)
            posting = asyncio.create_task(feed.run(1500, pace_s=0.005))
            for cut in range(1, 4):
                await feed.wait_until(lambda c=cut: feed.accepted >= 300 * c, "progress")  # type: ignore[misc]
                assert await redis.client_kill_filter(_type="pubsub") >= 1
            await posting
            await reading
            for topic in topics:
                ids = [e["id"] for e in events(got) if e["topic"] == topic]
                assert ids == feed.acknowledged[topic], topic
            response.close()
    finally:
        stop.set()
        await asyncio.wait_for(working, 10)
        await redis.aclose()


async def test_since_older_than_history_sends_a_gap_then_goes_on(
    settings: Settings, redis: Redis
) -> None:
    await write_history(redis, settings, "s.gap", range(5, 10))  # before 5-0 was trimmed
    await write_history(redis, settings, "s.kept", range(5, 8))
    async with running_app(settings) as url, aiohttp.ClientSession(timeout=TIMEOUT) as session:
        response = await session.get(
            f"{url}/api/v1/stream?topic=s.kept&topic=s.gap&last_event_id=s.gap=2-0,s.kept=5-0"
        )
        stream = messages(response)
        got = [await anext(stream) for _ in range(4)]
        response.close()
    assert [(m.event, m.data) for m in got] == [
        ("update", {"topic": "s.kept", "id": "6-0", "ts": 6, "data": {"n": 6}}),
        ("update", {"topic": "s.kept", "id": "7-0", "ts": 7, "data": {"n": 7}}),
        ("gap", {"topic": "s.gap", "since": "2-0", "resumed_after": "9-0"}),
        ("message", None),
    ]
    assert got[-1].id == "s.gap=9-0,s.kept=7-0"


async def test_from_replays_each_topic_from_a_time_and_says_where_it_starts(
    settings: Settings, redis: Redis
) -> None:
    await write_history(redis, settings, "s.whole", range(5, 10))
    await write_history(redis, settings, "s.trimmed", range(1, 4))
    await redis.xtrim(Keys.of(settings).topic("s.trimmed"), minid="2-0", approximate=False)
    query = "topic=s.whole&topic=s.trimmed&from=1"  # 1-0 of s.trimmed is gone
    async with running_app(settings) as url, aiohttp.ClientSession(timeout=TIMEOUT) as session:
        response = await session.get(f"{url}/api/v1/stream?{query}")
        got: list[Message] = []
        await updates_until(messages(response), 7, got)
        response.close()
        for bad in ("from=x", "from=2&since=1-0", "from=2&snapshot=1"):
            refused = await session.get(f"{url}/api/v1/stream?topic=s.whole&{bad}")
            assert refused.status == 400, bad
            assert "from" in (await refused.json())["error"]["fields"], bad
    ranges = [m.data for m in got if m.event == "range"]
    assert ranges == [
        {"topic": "s.whole", "from": 1, "complete": True},  # nothing was ever trimmed
        {"topic": "s.trimmed", "from": 2, "complete": False},  # held from 2-0 on only
    ]
    by_topic = {
        t: [e["id"] for e in events(got) if e["topic"] == t] for t in ("s.whole", "s.trimmed")
    }
    assert by_topic == {"s.whole": ["5-0", "6-0", "7-0", "8-0", "9-0"], "s.trimmed": ["2-0", "3-0"]}
    assert got[0].event == "range"  # before the topic's replay


async def test_the_subscribe_rule_before_the_stream_starts(settings: Settings) -> None:
    secured = settings.with_overrides(jwt_secret=SECRET, insecure=False)
    async with running_app(secured) as url, aiohttp.ClientSession(timeout=TIMEOUT) as session:

        async def get(query: str, **headers: str) -> tuple[int, dict[str, Any]]:
            async with session.get(f"{url}/api/v1/stream?{query}", headers=headers) as r:
                return r.status, await r.json() if r.status != 200 else {}

        status, body = await get("topic=metrics.cpu")
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body = await get(f"topic=metrics.cpu&token={hs256(['metrics.*'], secret='x' * 40)}")
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        token = hs256(["metrics.*"])
        status, body = await get(f"topic=metrics.cpu&topic=events.x&token={token}")
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body = await get(f"topic=metrics.cpu&since=later&token={token}")
        assert (status, body["error"]["code"]) == (400, "invalid")
        assert "since" in body["error"]["fields"]
        assert (await get(f"topic=metrics.cpu&token={token}"))[0] == 200
        assert (await get("topic=metrics.cpu", Authorization=f"Bearer {token}"))[0] == 200


async def test_an_idle_stream_gets_heartbeats(settings: Settings) -> None:
    fast_beat = settings.with_overrides(sse_heartbeat_s=0.2)
    async with running_app(fast_beat) as url, aiohttp.ClientSession(timeout=TIMEOUT) as session:
        response, stream = await open_stream(session, url, "topic=s.idle")
        beat = await asyncio.wait_for(anext(stream), 10)
        assert beat.comments == ["ping"]
        response.close()


async def test_a_reader_that_stops_reading_is_cut_at_the_bound(
    settings: Settings, worker: None
) -> None:
    """Two readers of one flood: the one that reads gets every event; the one that
    stopped reading is cut once its unsent bytes pass the bound, not buffered on."""
    bounded = settings.with_overrides(client_backlog_bytes=64 * 1024)
    async with serving(bounded) as (url, app), aiohttp.ClientSession(timeout=TIMEOUT) as session:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # it reads nothing
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET /api/v1/stream?topic=s.slow HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        response, stream = await open_stream(session, url, "topic=s.slow")
        got: list[Message] = []
        streams = app[DELIVERY].streams
        posted: list[str] = []
        blob = "x" * 4000  # a batch of 10 stays under the bound: only a stalled reader passes it
        async with asyncio.timeout(60):
            while streams.count() == 2:
                batch = [{"topic": "s.slow", "data": {"b": blob}} for _ in range(10)]
                posted += await post_events(url, batch, session)
                await updates_until(stream, len(posted), got)  # this one keeps reading
        assert app[METRICS].disconnects.labels("slow_client")._value.get() == 1
        assert streams.count() == 1  # the reader that reads is still there, with everything
        assert [e["id"] for e in events(got)] == posted
        response.close()
        writer.close()


async def test_the_drain_ends_streams_with_a_retry_hint(settings: Settings) -> None:
    draining = settings.with_overrides(drain_s=2.0)
    async with serving(draining) as (url, app), aiohttp.ClientSession(timeout=TIMEOUT) as session:
        response, stream = await open_stream(session, url, "topic=s.drain")
        drain = asyncio.create_task(app[DRAIN].run())
        rest = [m async for m in stream]
        assert rest[-1].retry is not None
        assert 500 <= rest[-1].retry <= 3000
        assert response.content.at_eof()
        late = await session.get(f"{url}/api/v1/stream?topic=s.drain")
        assert late.status == 503
        await drain


async def test_max_rate_merges_and_paces_each_topic_as_subscribe_does(
    base_url: str, worker: None, redis: Redis, settings: Settings
) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        before = await post_events(base_url, [{"topic": "s.rate", "data": {"value": -1}}])
        history = Keys(settings.prefix).topic("s.rate")
        await eventually(lambda: redis.xlen(history), "the first event in history")
        query = "topic=s.rate&topic=s.other&max_rate=1&snapshot=1"
        response, stream = await open_stream(session, base_url, query, fresh=False)
        got: list[Message] = []
        await updates_until(stream, 1, got)
        assert events(got)[0]["data"] == {"value": -1}  # a snapshot is sent whole
        assert events(got)[0]["id"] == before[0]
        sent = [{"topic": "s.rate", "data": {"value": n}} for n in range(20)]
        ids = await post_events(base_url, sent)
        while True:  # merged updates until all 20 are covered
            await updates_until(stream, len(events(got)) + 1, got)
            merged = [e["data"] for e in events(got)[1:]]
            if sum(m["count"] for m in merged) == 20:
                break
        assert 1 <= len(merged) < 20  # merged: fewer updates than events
        assert sum(m["sum"] for m in merged) == sum(range(20))  # nothing dropped
        assert merged[0]["first_id"] == ids[0]
        assert events(got)[-1]["id"] == ids[-1]
        assert got[-1].id is not None
        assert f"s.rate={ids[-1]}" in got[-1].id
        last_event_id = got[-1].id
        response.close()

        # A resume replays what it missed, merged the same way, with no duplicate.
        more = await post_events(base_url, [{"topic": "s.rate", "data": {"value": 1}}] * 5)
        response, stream = await open_stream(
            session, base_url, query, fresh=False, **{"Last-Event-ID": last_event_id}
        )
        replay: list[Message] = []
        while sum(e["data"]["count"] for e in events(replay)) < 5:
            await updates_until(stream, len(events(replay)) + 1, replay)
        assert sum(e["data"]["count"] for e in events(replay)) == 5
        assert events(replay)[0]["data"]["first_id"] == more[0]
        assert events(replay)[-1]["id"] == more[-1]
        response.close()
