"""The socket.io JS client (npm `socket.io-client` 4.x) against real web and worker processes.

Browsers and most apps reach us through this client, not python-socketio's: every
transport mode, the acks, the `update` lists, reconnection and the JS resume helper in
`realtime/static/realtime-client.js` are exercised with it here.
"""

from __future__ import annotations

import asyncio
import signal
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from unittest.mock import ANY

import pytest

from realtime.core.settings import Settings
from realtime.dev.embedded import RedisServer
from tests.helpers.clients import post_events
from tests.helpers.jsclient import JsClient, require_node
from tests.helpers.processes import ProcessGroup, RealtimeProcess
from tests.helpers.stack import fresh_settings, running_stack
from tests.helpers.tokens import INGEST_KEYS, SECRET, hs256

pytestmark = pytest.mark.system

# A subscribe ack also says where the subscription starts (`since`, to resume from).
SINCE = {"since": ANY}


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RealtimeProcess, Settings]]:
    """One web and one worker shared by the tests that do not restart anything."""
    settings = fresh_settings(redis_server)
    with running_stack(settings, tmp_path_factory.mktemp("js-stack")) as web:
        yield web, settings


@pytest.fixture
async def js() -> AsyncIterator[Callable[[str], JsClient]]:
    """Factory of started JS clients; each is closed at the end of the test."""
    node = require_node()
    started: list[JsClient] = []

    async def start(name: str = "js") -> JsClient:
        client = await JsClient(node, name).start()
        started.append(client)
        return client

    yield start  # type: ignore[misc]
    for client in started:
        await client.close()


def same_partition_topic(topic: str, partitions: int, stem: str) -> str:
    """A topic on `topic`'s ingest partition: one worker handles both in posting order, so
    an event on it is a barrier for events posted on `topic` before it."""
    want = zlib.crc32(topic.encode()) % partitions
    for n in range(1000):
        candidate = f"{stem}.{n}"
        if zlib.crc32(candidate.encode()) % partitions == want:
            return candidate
    raise AssertionError("no topic found on the same partition")


TRANSPORTS = {
    "websocket": ["websocket"],
    "polling": ["polling"],
    "polling-then-upgrade": ["polling", "websocket"],
}


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_transport_subscribe_update_unsubscribe(
    stack: tuple[RealtimeProcess, Settings], js: Callable[..., JsClient], mode: str
) -> None:
    web, settings = stack
    client = await js(mode)
    topic = f"js.{mode}"
    barrier = same_partition_topic(topic, settings.partitions, f"js.barrier-{mode}")

    connected = await client.connect(web.url, transports=TRANSPORTS[mode])
    assert connected["connected"], connected
    # The Engine.IO session opened on the first transport asked for.
    assert client.of("open")[0]["transport"] == TRANSPORTS[mode][0]
    if mode == "polling-then-upgrade":
        await client.wait_until(lambda c: bool(c.of("upgrade")), "the upgrade to websocket")
        assert client.of("upgrade")[0]["transport"] == "websocket"

    assert await client.emit("subscribe", {"topic": topic}) == {"ok": True, "topic": topic, **SINCE}
    assert await client.emit("subscribe", {"topic": barrier}) == {
        "ok": True,
        "topic": barrier,
        **SINCE,
    }

    ts = 1_700_000_000_000
    batch = [{"topic": topic, "data": {"seq": n, "label": "é✓"}, "ts": ts + n} for n in range(5)]
    ids = await post_events(web.url, batch)
    events = await client.wait_events(5, topic)
    assert events == [
        {"topic": topic, "id": i, "ts": ts + n, "data": {"seq": n, "label": "é✓"}}
        for n, i in enumerate(ids)
    ]
    # `update` is always a list, even for one event.
    assert all(isinstance(n["events"], list) and n["events"] for n in client.of("update"))

    assert await client.emit("unsubscribe", {"topic": topic}) == {"ok": True, "topic": topic}
    await post_events(web.url, {"topic": topic, "data": {"seq": 99}})
    [marker] = await post_events(web.url, {"topic": barrier, "data": {}})
    await client.wait_events(1, barrier)
    assert [e["id"] for e in client.events(barrier)] == [marker]
    assert len(client.events(topic)) == 5, "an event arrived after unsubscribe"

    state = await client.request("state")
    assert state["transport"] == ("polling" if mode == "polling" else "websocket")
    # JSON only: every Socket.IO packet is text; no binary event or ack was ever needed.
    assert state["packets"]["binary"] == 0
    assert set(state["packets"]["types"]) <= {"0", "2", "3"}, state["packets"]


async def test_refused_subscribe_is_an_error_ack(
    stack: tuple[RealtimeProcess, Settings], js: Callable[..., JsClient]
) -> None:
    web, _ = stack
    client = await js()
    assert (await client.connect(web.url, transports=["websocket"]))["connected"]
    ack = await client.emit("subscribe", {"topic": "Not A Topic"})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "invalid"
    assert ack["error"]["message"]
    assert "topic" in ack["error"]["fields"]
    # The connection is still usable afterwards.
    assert await client.emit("subscribe", {"topic": "js.fine"}) == {
        "ok": True,
        "topic": "js.fine",
        **SINCE,
    }


async def test_auth_payload_on_connect_is_accepted(
    stack: tuple[RealtimeProcess, Settings], js: Callable[..., JsClient]
) -> None:
    """`io(url, {auth: {token}})` sends the token in the CONNECT packet; with auth off
    (REALTIME_INSECURE=1) the server accepts any."""
    web, _ = stack
    client = await js()
    connected = await client.connect(web.url, transports=["websocket"], auth={"token": "x.y.z"})
    assert connected["connected"], connected
    assert await client.emit("subscribe", {"topic": "js.auth"}) == {
        "ok": True,
        "topic": "js.auth",
        **SINCE,
    }


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_foreign_origin_is_refused_with_connect_error(
    stack: tuple[RealtimeProcess, Settings], js: Callable[..., JsClient], transport: str
) -> None:
    """Without REALTIME_CORS_ORIGINS only same-origin browsers may connect: the JS client
    sees `connect_error` and never connects."""
    web, _ = stack
    client = await js()
    result = await client.connect(
        web.url, transports=[transport], reconnection=False,
        extraHeaders={"Origin": "https://evil.example"},
    )  # fmt: skip
    assert result["connected"] is False, result
    assert result["error"]["message"]  # e.g. "xhr poll error" / "websocket error"
    assert not client.of("connect")


async def test_refused_token_gets_connect_error_with_message(
    redis_server: RedisServer, processes: ProcessGroup, js: Callable[..., JsClient]
) -> None:
    """Issue 4's contract: a connection refused for its token gets `connect_error` with a
    message the app can show (a CONNECT_ERROR packet), and the client does not retry."""
    settings = fresh_settings(redis_server).with_overrides(insecure=False)
    web = processes.web(settings, REALTIME_JWT_SECRET=SECRET, REALTIME_INGEST_KEYS=INGEST_KEYS)
    client = await js()
    result = await client.connect(web.url, transports=["websocket"], auth={"token": "bad"})
    assert result["connected"] is False
    assert result["error"]["message"] == "The token is malformed."
    assert result["error"]["data"] == {"code": "unauthorized"}
    assert result["active"] is False  # a refusal by the server: no automatic retry
    # A good token connects, and its grant decides what it may subscribe to.
    good = await js()
    token = hs256(["js.*"])
    assert (await good.connect(web.url, transports=["websocket"], auth={"token": token}))[
        "connected"
    ]
    ack = await good.emit("subscribe", {"topic": "billing.x"})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "forbidden"
    assert (await good.emit("subscribe", {"topic": "js.ok"}))["ok"] is True


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_helper_resubscribes_after_a_web_restart(
    redis_server: RedisServer, processes: ProcessGroup, js: Callable[..., JsClient], transport: str
) -> None:
    """socket.io-client's own reconnection brings the connection back after the web
    process restarts; the helper subscribes again and events flow as before. (With
    connection-state recovery off: with it on, the session comes back without a
    subscribe, `tests/test_recovery.py`.)"""
    settings = fresh_settings(redis_server)
    web = processes.web(settings, REALTIME_RECOVERY_S="0")
    processes.worker(settings)
    client = await js()
    connected = await client.connect_helper(
        web.url, transports=[transport], reconnectionDelay=100, reconnectionDelayMax=500
    )
    assert connected["connected"], connected
    assert (await client.request("subscribe", topic="js.restart"))["ok"]

    before = await post_events(
        web.url, [{"topic": "js.restart", "data": {"n": n}} for n in range(3)]
    )
    await client.wait_events(3, "js.restart")

    # Killed, not stopped: a graceful stop waits for open websockets (issue 6 adds the
    # drain); a crash is the harder case for the client anyway.
    web.kill()
    await client.wait_until(lambda c: bool(c.of("disconnect")), "disconnect")
    # A transport failure, which socket.io-client retries by itself ("io server
    # disconnect" would stop it).
    assert client.of("disconnect")[0]["reason"] in ("transport close", "transport error")
    web.start().wait_ready()
    await client.wait_until(lambda c: len(c.of("connect")) >= 2, "a reconnect")
    assert client.of("reconnect_attempt"), "reconnected without an attempt?"
    await client.wait_until(lambda c: len(c.of("subscribed")) >= 2, "the resubscribe")

    after = await post_events(
        web.url, [{"topic": "js.restart", "data": {"n": n}} for n in range(3, 6)]
    )
    events = await client.wait_events(6, "js.restart")
    # No event lost after the restart, none doubled.
    assert [e["id"] for e in events] == before + after
    assert await client.request("lastId", topic="js.restart") == after[-1]
    assert not client.of("subscribe_error"), client.of("subscribe_error")


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_drained_client_keeps_retrying_and_resumes_on_the_next_instance(
    redis_server: RedisServer, processes: ProcessGroup, js: Callable[..., JsClient], transport: str
) -> None:
    """SIGTERM drains the web: the JS client's connection ends like a network failure
    (not "io server disconnect", after which socket.io-client would give up), its
    reconnects are refused while the instance drains and retried, and on the next
    instance on that address the helper resumes without a gap."""
    settings = fresh_settings(redis_server)
    web = processes.web(settings, REALTIME_DRAIN_S="2")
    processes.worker(settings)
    client = await js()
    connected = await client.connect_helper(
        web.url, transports=[transport], reconnectionDelay=100, reconnectionDelayMax=300
    )
    assert connected["connected"], connected
    assert (await client.request("subscribe", topic="js.drain"))["ok"]
    before = await post_events(web.url, [{"topic": "js.drain", "data": {"n": n}} for n in range(3)])
    await client.wait_events(3, "js.drain")

    web.signal(signal.SIGTERM)
    await client.wait_until(lambda c: bool(c.of("disconnect")), "disconnect")
    assert client.of("disconnect")[0]["reason"] in ("transport close", "transport error")
    assert web.process is not None
    assert await asyncio.to_thread(web.process.wait, 30) == 0
    # It keeps retrying by itself (the instance may have exited before the first retry:
    # with one client to drop, a drain ends at once).
    await client.wait_until(lambda c: bool(c.of("reconnect_attempt")), "a reconnect attempt")

    replacement = processes.web(settings, port=web.port)  # the next pod behind the address
    during = await post_events(
        replacement.url, [{"topic": "js.drain", "data": {"n": n}} for n in range(3, 6)]
    )
    await client.wait_until(lambda c: len(c.of("connect")) >= 2, "a reconnect", timeout=30)
    events = await client.wait_events(6, "js.drain")
    assert [e["id"] for e in events] == before + during
    assert not client.of("gap"), client.of("gap")


async def test_helper_resumes_with_no_gap_after_a_web_restart(
    redis_server: RedisServer, processes: ProcessGroup, js: Callable[..., JsClient]
) -> None:
    """Events posted (through another web) while the client's web is down are replayed
    when it reconnects: every event once, in order, and `recovered: true`. (The helper's
    own resume with `since`, so with connection-state recovery off.)"""
    settings = fresh_settings(redis_server)
    web = processes.web(settings, REALTIME_RECOVERY_S="0")
    other = processes.web(settings)
    processes.worker(settings)
    client = await js()
    await client.connect_helper(
        web.url, transports=["websocket"], reconnectionDelay=100, reconnectionDelayMax=500
    )
    assert (await client.request("subscribe", topic="js.resume"))["ok"]

    ids = await post_events(
        other.url, [{"topic": "js.resume", "data": {"n": n}} for n in range(10)]
    )
    await client.wait_events(10, "js.resume")
    web.kill()
    await client.wait_until(lambda c: bool(c.of("disconnect")), "disconnect")
    ids += await post_events(
        other.url, [{"topic": "js.resume", "data": {"n": n}} for n in range(10, 30)]
    )
    web.start().wait_ready()
    await client.wait_until(lambda c: len(c.of("subscribed")) >= 2, "the resubscribe")
    resumed = client.of("subscribed")[-1]
    assert resumed["resumed"] is True
    assert resumed["ack"]["recovered"] is True
    ids += await post_events(
        other.url, [{"topic": "js.resume", "data": {"n": n}} for n in range(30, 40)]
    )
    events = await client.wait_events(40, "js.resume")
    assert [e["id"] for e in events] == ids
    assert [e["data"]["n"] for e in events] == list(range(40))
    assert not client.of("gap")
