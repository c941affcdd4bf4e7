"""The wire protocol spoken by hand, as the Socket.IO Swift and Java SDKs speak it.

Engine.IO v4 frames (`0` open, `2`/`3` ping/pong, `5` upgrade, `6` noop) carrying
Socket.IO v5 packets (`40` connect, `42` event, `42N`/`43N` event/ack with ack id N), JSON
text (binary packets: tests/test_binary.py). If these pass, a client in any language
needs nothing beyond the public specs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from realtime.dev.embedded import RedisServer
from realtime.transport.engine import request_problem
from tests.helpers.clients import post_events
from tests.helpers.processes import RealtimeProcess
from tests.helpers.stack import fresh_settings, running_stack

PING_INTERVAL_S = 1.5  # not whole seconds: announced exactly (python-engineio said 1000)
PING_TIMEOUT_S = 1.25
RECORD_SEPARATOR = "\x1e"  # between packets in one long-polling payload


@pytest.fixture(scope="module")
def web(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealtimeProcess]:
    settings = fresh_settings(redis_server)
    with running_stack(
        settings, tmp_path_factory.mktemp("raw-stack"),
        REALTIME_PING_INTERVAL_MS=str(int(PING_INTERVAL_S * 1000)),
        REALTIME_PING_TIMEOUT_MS=str(int(PING_TIMEOUT_S * 1000)),
    ) as web:  # fmt: skip
        yield web


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def eio_url(web: RealtimeProcess, transport: str, sid: str | None = None) -> str:
    url = f"{web.url}/socket.io/?EIO=4&transport={transport}"
    return url + (f"&sid={sid}" if sid else "")


def parse_open(frame: str) -> dict[str, Any]:
    assert frame[0] == "0", frame
    handshake: dict[str, Any] = json.loads(frame[1:])
    return handshake


class RawWebsocket:
    """A websocket that answers pings when told to and sorts frames by kind."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, answer_pings: bool = True) -> None:
        self.ws = ws
        self.answer_pings = answer_pings
        self.pings = 0
        self.offset: str | None = None  # the last `update`'s trailing offset (recovery)

    async def send(self, frame: str) -> None:
        await self.ws.send_str(frame)

    async def recv(self, timeout: float = 10.0) -> str:
        """The next frame that is not a ping or a noop (pings are counted and, if asked,
        answered)."""
        while True:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
            assert message.type == aiohttp.WSMsgType.TEXT, f"not a text frame: {message}"
            frame: str = message.data
            if frame == "6":  # noop: python-engineio sends one around an upgrade; ignored
                continue
            if frame == "2":
                self.pings += 1
                if self.answer_pings:
                    await self.send("3")
                continue
            return frame

    async def answer_pings_until(self, pings: int) -> None:
        """Answer pings until `pings` were seen; the connection must stay open meanwhile."""
        while self.pings < pings:
            message = await asyncio.wait_for(self.ws.receive(), 5 * PING_INTERVAL_S)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            assert message.data == "2", message
            self.pings += 1
            await self.send("3")

    async def call(self, ack_id: int, event: str, data: Any) -> Any:
        """`42N[event, data]` -> the matching `43N[ack]`; any `update` met meanwhile is an error."""
        await self.send(f"42{ack_id}" + json.dumps([event, data]))
        frame = await self.recv()
        prefix = f"43{ack_id}"
        assert frame.startswith(prefix + "["), frame
        [ack] = json.loads(frame[len(prefix) :])
        return ack

    async def updates(self, count: int) -> list[dict[str, Any]]:
        """Read `42["update", [...]]` frames until `count` topic events arrived."""
        events: list[dict[str, Any]] = []
        while len(events) < count:
            frame = await self.recv()
            assert frame.startswith("42["), frame
            # With connection-state recovery on, an offset comes last (a string).
            name, payload, *rest = json.loads(frame[2:])
            assert name == "update"
            assert isinstance(payload, list)
            assert payload
            [offset] = rest
            assert isinstance(offset, str), rest
            self.offset = offset
            events += payload
        return events


async def connect_answer(raw: RawWebsocket, auth: dict[str, Any] | None = None) -> dict[str, Any]:
    """CONNECT to `/`: the answer's data (`sid`, and `pid` and `resume` for recovery)."""
    await raw.send("40" + (json.dumps(auth) if auth is not None else ""))
    frame = await raw.recv()
    assert frame.startswith("40{"), frame
    data: dict[str, Any] = json.loads(frame[2:])
    return data


async def connect_namespace(raw: RawWebsocket, auth: dict[str, Any] | None = None) -> str:
    sid: str = (await connect_answer(raw, auth))["sid"]
    return sid


@pytest.mark.system
async def test_websocket_session_with_acks_updates_and_heartbeat(
    web: RealtimeProcess, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(eio_url(web, "websocket")) as ws:
        raw = RawWebsocket(ws)
        handshake = parse_open(await raw.recv())
        assert handshake["upgrades"] == []  # already on the best transport
        assert handshake["pingInterval"] == 1500
        assert handshake["pingTimeout"] == 1250
        assert handshake["maxPayload"] > 0
        assert handshake["sid"]

        # The Swift/Java SDKs send their `auth` object in CONNECT; auth is off here.
        assert await connect_namespace(raw, {"token": "from-the-app"})

        assert await raw.call(1, "subscribe", {"topic": "raw.ws"}) == {
            "ok": True,
            "topic": "raw.ws",
            "since": "0-0",  # where the subscription starts: this topic has no history yet
        }
        refused = await raw.call(2, "subscribe", {"topic": "Nope!"})
        assert refused["ok"] is False
        assert refused["error"]["code"] == "invalid"
        # Ack ids are arbitrary integers: a multi-digit one comes back as it was sent.
        ack = await raw.call(4096, "subscribe", {"topic": "raw.ws2"})
        assert ack == {"ok": True, "topic": "raw.ws2", "since": "0-0"}

        ids = await post_events(web.url, [{"topic": "raw.ws", "data": {"n": n}} for n in range(3)])
        events = await raw.updates(3)
        assert [e["id"] for e in events] == ids
        assert [e["data"] for e in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert set(events[0]) == {"topic", "id", "ts", "data"}

        # Heartbeat: the server pings every pingInterval; a client that answers `3` stays
        # connected well past pingInterval + pingTimeout.
        await raw.answer_pings_until(3)
        assert not ws.closed
        ack = await raw.call(3, "unsubscribe", {"topic": "raw.ws"})
        assert ack == {"ok": True, "topic": "raw.ws"}


@pytest.mark.integration
async def test_a_client_that_stops_answering_pings_is_disconnected(
    web: RealtimeProcess, http: aiohttp.ClientSession
) -> None:
    """A phone that lost its network without a FIN: the server notices within
    pingInterval + pingTimeout and closes, so its subscriptions do not linger."""
    async with http.ws_connect(eio_url(web, "websocket")) as ws:
        raw = RawWebsocket(ws, answer_pings=False)
        parse_open(await raw.recv())
        await connect_namespace(raw)
        message = await asyncio.wait_for(
            _first_non_ping(raw), timeout=10 * (PING_INTERVAL_S + PING_TIMEOUT_S)
        )
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
        assert raw.pings >= 1


async def _first_non_ping(raw: RawWebsocket) -> aiohttp.WSMessage:
    while True:
        message = await raw.ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT and message.data == "2":
            raw.pings += 1
            continue
        return message


class RawPolling:
    """Engine.IO long-polling: GET to receive, POST to send, one session id."""

    def __init__(self, http: aiohttp.ClientSession, web: RealtimeProcess) -> None:
        self.http = http
        self.web = web
        self.sid = ""

    async def open(self) -> dict[str, Any]:
        [frame] = await self.get(url=eio_url(self.web, "polling"))
        handshake = parse_open(frame)
        self.sid = handshake["sid"]
        return handshake

    async def get(self, url: str | None = None) -> list[str]:
        async with self.http.get(url or eio_url(self.web, "polling", self.sid)) as response:
            assert response.status == 200, await response.text()
            return (await response.text()).split(RECORD_SEPARATOR)

    async def post(self, *frames: str) -> None:
        async with self.http.post(
            eio_url(self.web, "polling", self.sid), data=RECORD_SEPARATOR.join(frames).encode()
        ) as response:
            # The body ("ok" in the spec, "OK" from python-engineio) is ignored by clients.
            assert response.status == 200, await response.text()

    async def connect(self) -> None:
        """CONNECT to namespace `/` and check the server's CONNECT answer."""
        await self.post("40")
        [connected] = await self.frames_until(1)
        assert connected.startswith("40{"), connected

    async def frames_until(self, count: int) -> list[str]:
        frames: list[str] = []
        while len(frames) < count:
            frames += [f for f in await self.get() if f != "6"]  # `6`: noop
        return frames


@pytest.mark.integration
async def test_long_polling_session(web: RealtimeProcess, http: aiohttp.ClientSession) -> None:
    poll = RawPolling(http, web)
    handshake = await poll.open()
    assert handshake["upgrades"] == ["websocket"]

    await poll.post("40")
    [connected] = await poll.frames_until(1)
    assert connected.startswith("40{")

    # Two packets in one POST, separated by \x1e, as the SDKs batch them.
    await poll.post('421["subscribe",{"topic":"raw.poll"}]', '422["subscribe",{"topic":"Bad"}]')
    # Acks are matched by their id; the two requests are handled concurrently, so the
    # refusal (no Redis read) may well come first.
    acks = sorted(await poll.frames_until(2))
    assert acks[0] == '431[{"ok":true,"topic":"raw.poll","since":"0-0"}]'
    assert acks[1].startswith('432[{"ok":false,')

    ids = await post_events(web.url, [{"topic": "raw.poll", "data": {"n": n}} for n in range(3)])
    events: list[dict[str, Any]] = []
    while len(events) < 3:
        for frame in await poll.frames_until(1):
            if frame == "2":  # the heartbeat travels over polling too
                await poll.post("3")
                continue
            name, payload, _offset = json.loads(frame[2:])
            assert frame.startswith("42["), frame
            assert name == "update", frame
            events += payload
    assert [e["id"] for e in events] == ids


@pytest.mark.integration
async def test_polling_then_upgrade_to_websocket(
    web: RealtimeProcess, http: aiohttp.ClientSession
) -> None:
    """The Java SDK's default: open over polling, probe a websocket, then switch."""
    poll = RawPolling(http, web)
    await poll.open()
    await poll.connect()

    async with http.ws_connect(eio_url(web, "websocket", poll.sid)) as ws:
        raw = RawWebsocket(ws)
        await raw.send("2probe")
        assert await raw.recv() == "3probe"
        await raw.send("5")  # upgrade: from now on everything goes over the websocket
        ack = await raw.call(7, "subscribe", {"topic": "raw.up"})
        assert ack == {"ok": True, "topic": "raw.up", "since": "0-0"}
        ids = await post_events(web.url, {"topic": "raw.up", "data": {"n": 1}})
        [event] = await raw.updates(1)
        assert event["id"] == ids[0]

        # A second websocket for the upgraded session is accepted, then closed at once;
        # the first one goes on.
        async with http.ws_connect(eio_url(web, "websocket", poll.sid)) as duplicate:
            closing = await asyncio.wait_for(duplicate.receive(), 10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        ids = await post_events(web.url, {"topic": "raw.up", "data": {"n": 2}})
        [event] = await raw.updates(1)
        assert event["id"] == ids[0]


@pytest.mark.system
@pytest.mark.parametrize(
    ("method", "query", "why"),
    [
        ("GET", "EIO=4", "Transport unknown"),  # python-engineio assumed polling: 200
        ("GET", "EIO=4&transport=carrier-pigeon", "Transport unknown"),
        ("POST", "EIO=4&transport=polling", "Bad handshake method"),  # was 405
    ],
)
async def test_engineio_request_errors_are_400_as_the_spec_says(
    web: RealtimeProcess, http: aiohttp.ClientSession, method: str, query: str, why: str
) -> None:
    async with http.request(method, f"{web.url}/socket.io/?{query}", data=b"40") as response:
        assert response.status == 400
        assert json.loads(await response.text()) == why


@pytest.mark.system
async def test_a_connect_to_an_unknown_namespace_is_refused_with_an_object(
    web: RealtimeProcess, http: aiohttp.ClientSession
) -> None:
    poll = RawPolling(http, web)
    await poll.open()
    await poll.post("40/nowhere,")
    [refused] = await poll.frames_until(1)
    assert refused == '44/nowhere,{"message":"Invalid namespace"}'
    await poll.connect()  # the session itself is fine: `/` still connects


@pytest.mark.unit
@pytest.mark.parametrize(
    ("method", "query", "problem"),
    [
        ("GET", {"EIO": "4", "transport": "polling"}, None),
        ("GET", {"EIO": "4", "transport": "websocket"}, None),
        ("POST", {"EIO": "4", "transport": "polling", "sid": "x"}, None),
        ("GET", {"EIO": "4"}, "Transport unknown"),
        ("GET", {"transport": "flash"}, "Transport unknown"),
        ("POST", {"transport": "polling", "sid": ""}, "Bad handshake method"),
    ],
)
def test_request_problem(method: str, query: dict[str, str], problem: str | None) -> None:
    assert request_problem(method, query) == problem


@pytest.mark.system
async def test_a_polling_client_that_stops_answering_pings_is_closed(
    web: RealtimeProcess, http: aiohttp.ClientSession
) -> None:
    """A long-polling client that vanished (no GET pending, no pong): its session ends
    pingInterval + pingTimeout after its last pong, and a later request is a 400."""
    poll = RawPolling(http, web)
    await poll.open()
    await poll.connect()
    # The behaviour under test is a timeout: wait well past it, doing nothing.
    await asyncio.sleep(3 * (PING_INTERVAL_S + PING_TIMEOUT_S))
    async with http.get(eio_url(web, "polling", poll.sid)) as response:
        assert response.status == 400


@pytest.mark.system
async def test_a_client_close_answers_the_pending_poll_with_a_noop_then_400(
    web: RealtimeProcess, http: aiohttp.ClientSession
) -> None:
    """The GET must be waiting at the server when the close comes; nothing outside tells
    when it is, so a run whose GET came too late (answered 400) is tried again."""
    for _attempt in range(5):
        poll = RawPolling(http, web)
        await poll.open()
        await poll.connect()
        url = eio_url(web, "polling", poll.sid)
        pending = asyncio.create_task(http.get(url))
        await asyncio.sleep(0.2)
        await poll.post("1")  # the client closes the session
        async with await asyncio.wait_for(pending, 10) as answer:
            if answer.status == 400:
                continue  # the GET arrived after the close
            assert (answer.status, await answer.text()) == (200, "6")
        async with http.get(url) as response:
            assert response.status == 400
        return
    pytest.fail("no GET was pending at the close in 5 tries")


@pytest.mark.system
async def test_a_resume_token_recovers_the_session(
    web: RealtimeProcess, http: aiohttp.ClientSession
) -> None:
    """An SDK without recovery code (Swift, Java): the CONNECT answer has `pid` and a
    `resume` token; after a drop, CONNECT with auth `{"resume": "<pid>.<offset>"}` (the
    offset of the last `update` received) restores both subscriptions and replays what
    each missed, once, without a subscribe; the answer repeats the pid."""
    topics = ("raw.resume.a", "raw.resume.b")
    async with http.ws_connect(eio_url(web, "websocket")) as ws:
        raw = RawWebsocket(ws)
        parse_open(await raw.recv())
        answer = await connect_answer(raw, {"token": "from-the-app"})
        pid = answer["pid"]
        assert answer["resume"].startswith(pid + ".")
        for n, topic in enumerate(topics, 1):
            assert (await raw.call(n, "subscribe", {"topic": topic}))["ok"]
        seen = await post_events(web.url, [{"topic": t, "data": {"n": 0}} for t in topics])
        # (order is promised within a topic: these are two)
        assert sorted(e["id"] for e in await raw.updates(2)) == sorted(seen)
        token = f"{pid}.{raw.offset}"
    missed = await post_events(
        web.url, [{"topic": t, "data": {"n": n}} for n in (1, 2) for t in topics]
    )
    async with http.ws_connect(eio_url(web, "websocket")) as ws:
        raw = RawWebsocket(ws)
        parse_open(await raw.recv())
        again = await connect_answer(raw, {"token": "from-the-app", "resume": token})
        assert again["pid"] == pid
        got = await raw.updates(4)
        assert sorted(e["id"] for e in got) == sorted(missed)
        posted_topics = [t for _ in (1, 2) for t in topics]
        for topic in topics:  # in order per topic
            assert [e["id"] for e in got if e["topic"] == topic] == [
                i for i, t in zip(missed, posted_topics, strict=True) if t == topic
            ]
        after = await post_events(web.url, [{"topic": t, "data": {"n": 3}} for t in topics])
        assert [e["id"] for e in await raw.updates(2)] == after  # live, and nothing twice
    # A token the server cannot use (unknown session) is a fresh session, not an error.
    async with http.ws_connect(eio_url(web, "websocket")) as ws:
        raw = RawWebsocket(ws)
        parse_open(await raw.recv())
        fresh = await connect_answer(raw, {"resume": "nosuchsession.abc.1"})
        assert fresh["pid"] != pid
