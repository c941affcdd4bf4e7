"""Connection-state recovery with an unmodified socket.io-client 4.x app (no helper):
after a network drop, a restart of its web instance, or a SIGKILL of it and a return on
another instance, `socket.recovered` is true and every `update` it missed arrives
exactly once, on every topic of the session, with no resubscribe by the app."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from realtime.dev.embedded import RedisServer
from tests.helpers.clients import Watcher, post_events
from tests.helpers.holdproxy import hold_proxy
from tests.helpers.jsclient import JsClient, require_node
from tests.helpers.processes import ProcessGroup, RealtimeProcess
from tests.helpers.stack import fresh_settings

pytestmark = pytest.mark.system

TOPICS = ("rec.a", "rec.b", "rec.c")


@pytest.fixture
async def js() -> AsyncIterator[Callable[[], Any]]:
    node = require_node()
    started: list[JsClient] = []

    async def start() -> JsClient:
        client = await JsClient(node).start()
        started.append(client)
        return client

    yield start
    for client in started:
        await client.close()


async def post_round(url: str, first: int, count: int) -> dict[str, list[str]]:
    """`count` events on each topic; their ids by topic."""
    ids: dict[str, list[str]] = {}
    for topic in TOPICS:
        ids[topic] = await post_events(
            url, [{"topic": topic, "data": {"n": n}} for n in range(first, first + count)]
        )
    return ids


async def subscribed_client(
    js: Callable[[], Any], url: str, transports: tuple[str, ...] = ("websocket",)
) -> JsClient:
    """A plain socket.io-client app: subscribes once, on its first connect."""
    client: JsClient = await js()
    connected = await client.connect(
        url, transports=list(transports), reconnectionDelay=300, reconnectionDelayMax=600
    )
    assert connected["connected"], connected
    for topic in TOPICS:
        assert (await client.emit("subscribe", {"topic": topic}))["ok"]
    return client


async def check_round(client: JsClient, ids: dict[str, list[str]]) -> None:
    for topic, wanted in ids.items():
        got = await client.wait_events(len(wanted), topic)
        await asyncio.sleep(0)
        assert [e["id"] for e in got] == wanted, topic


def merge(*rounds: dict[str, list[str]]) -> dict[str, list[str]]:
    return {t: [i for r in rounds for i in r[t]] for t in TOPICS}


async def recovered_after(client: JsClient, connects: int) -> None:
    await client.wait_until(lambda c: len(c.of("connect")) >= connects, "a reconnect", 30)
    note = client.of("connect")[connects - 1]
    assert note["recovered"] is True, note


@pytest.mark.parametrize(
    "transports", [("websocket",), ("polling",), ("polling", "websocket")], ids="-".join
)
async def test_network_drop_recovers_every_missed_update(
    redis_server: RedisServer,
    processes: ProcessGroup,
    js: Callable[[], Any],
    transports: tuple[str, ...],
) -> None:
    """Over a websocket, over long-polling, and polling upgraded to a websocket."""
    settings = fresh_settings(redis_server)
    web = processes.web(settings)
    processes.worker(settings)
    client = await subscribed_client(js, web.url, transports)
    assert client.of("connect")[0]["recovered"] is False
    first = await post_round(web.url, 0, 5)
    await check_round(client, first)

    await client.request("dropTransport")
    await client.wait_until(lambda c: bool(c.of("disconnect")), "disconnect")
    missed = await post_round(web.url, 5, 5)  # while it waits to reconnect
    await recovered_after(client, 2)
    after = await post_round(web.url, 10, 3)
    await check_round(client, merge(first, missed, after))
    # The missed ones came after the reconnect, not before the drop.
    notes = [n["event"] for n in client.notes]
    assert "update" in notes[notes.index("disconnect") :]


async def test_restarted_instance_recovers_the_session(
    redis_server: RedisServer, processes: ProcessGroup, js: Callable[[], Any]
) -> None:
    settings = fresh_settings(redis_server)
    web = processes.web(settings, REALTIME_DRAIN_S="1")
    other = processes.web(settings)
    processes.worker(settings)
    client = await subscribed_client(js, web.url)
    first = await post_round(other.url, 0, 4)
    await check_round(client, first)

    web.signal(signal.SIGTERM)
    await client.wait_until(lambda c: bool(c.of("disconnect")), "disconnect")
    assert web.process is not None
    assert await asyncio.to_thread(web.process.wait, 30) == 0
    missed = await post_round(other.url, 4, 6)
    processes.web(settings, port=web.port)  # the same instance, started again
    await recovered_after(client, 2)
    after = await post_round(other.url, 10, 2)
    await check_round(client, merge(first, missed, after))


async def test_sigkilled_instance_session_recovers_on_another(
    redis_server: RedisServer, processes: ProcessGroup, js: Callable[[], Any]
) -> None:
    settings = fresh_settings(redis_server)
    web = processes.web(settings)
    other = processes.web(settings)
    processes.worker(settings)
    client = await subscribed_client(js, web.url)
    first = await post_round(other.url, 0, 4)
    await check_round(client, first)
    # More on one topic only: the topics' positions differ when the instance dies.
    extra = {"rec.a": await post_events(other.url, [{"topic": "rec.a", "data": {"n": 99}}])}
    await client.wait_events(5, "rec.a")

    web.kill()  # SIGKILL: nothing written on the way out
    await client.wait_until(lambda c: bool(c.of("disconnect")), "disconnect")
    missed = await post_round(other.url, 4, 6)
    # Another instance behind the same address (a new process, nothing in memory).
    replacement: RealtimeProcess = processes.web(settings, port=web.port)
    await recovered_after(client, 2)
    after = await post_round(replacement.url, 10, 2)
    wanted = merge(first, missed, after)
    wanted["rec.a"] = first["rec.a"] + extra["rec.a"] + missed["rec.a"] + after["rec.a"]
    await check_round(client, wanted)


async def test_sigkill_while_a_frames_log_entry_is_on_its_way_loses_nothing(
    redis_server: RedisServer, processes: ProcessGroup, js: Callable[[], Any]
) -> None:
    """A hand-out sends its frame's recovery-log entry and goes on without waiting for
    Redis's answer (realtime/delivery/sessions.py). Here the entry is still on its way
    (held by a proxy between the instance and Redis) when the client already has the
    frame, and the instance is SIGKILLed then: what it sent arrives all the same, and
    the session recovers on its replacement with every update once."""
    settings = fresh_settings(redis_server)
    other = processes.web(settings)
    processes.worker(settings)
    async with hold_proxy("127.0.0.1", redis_server.port) as proxy:
        # A Redis timeout longer than the test: a hand-out that waited for the entry's
        # answer would not go out at all (in a thread: the proxy runs on this loop).
        behind = settings.with_overrides(redis_url=proxy.url, redis_timeout_s=60.0)
        web = await asyncio.to_thread(processes.web, behind)
        client = await subscribed_client(js, web.url)
        first = await post_round(other.url, 0, 3)
        await check_round(client, first)

        proxy.hold()  # the instance's writes to Redis stop on the way; its reads flow
        held = {"rec.a": await post_events(other.url, [{"topic": "rec.a", "data": {"n": 3}}])}
        await client.wait_events(4, "rec.a")  # the frame, its log entry not in Redis yet
        assert b"XADD" in proxy.held_bytes()  # the frame's log entry, on its way
        web.kill()  # SIGKILL
        proxy.release()  # what the instance sent before it died reaches Redis
        await client.wait_until(lambda c: bool(c.of("disconnect")), "disconnect")
    missed = await post_round(other.url, 4, 3)
    replacement = processes.web(settings, port=web.port)
    await recovered_after(client, 2)
    after = await post_round(replacement.url, 7, 2)
    wanted = merge(first, missed, after)
    wanted["rec.a"] = first["rec.a"] + held["rec.a"] + missed["rec.a"] + after["rec.a"]
    await check_round(client, wanted)


async def test_recovery_off_means_no_offset_and_a_fresh_session(
    redis_server: RedisServer, processes: ProcessGroup, js: Callable[[], Any]
) -> None:
    settings = fresh_settings(redis_server)
    web = processes.web(settings, REALTIME_RECOVERY_S="0")
    processes.worker(settings)
    client = await subscribed_client(js, web.url)
    await check_round(client, await post_round(web.url, 0, 2))
    await client.request("dropTransport")
    await client.wait_until(lambda c: len(c.of("connect")) >= 2, "a reconnect")
    assert not client.of("connect")[1].get("recovered")  # undefined: no pid was given


@pytest.mark.parametrize("legacy", [False, True], ids=["native", "resume-token"])
async def test_helper_recovers_without_resubscribing(
    redis_server: RedisServer, processes: ProcessGroup, js: Callable[[], Any], legacy: bool
) -> None:
    """The JS helper on a recovered session subscribes nothing again; with a
    socket.io-client older than 4.6 it sends the resume token instead."""
    settings = fresh_settings(redis_server)
    web = processes.web(settings)
    processes.worker(settings)
    client: JsClient = await js()
    connected = await client.connect_helper(
        web.url, transports=["websocket"], legacy=legacy,
        reconnectionDelay=300, reconnectionDelayMax=600,
    )  # fmt: skip
    assert connected["connected"], connected
    for topic in TOPICS:
        assert (await client.request("subscribe", topic=topic))["ok"]
    first = await post_round(web.url, 0, 3)
    await check_round(client, first)
    await client.request("dropTransport")
    await client.wait_until(lambda c: bool(c.of("disconnect")), "disconnect")
    missed = await post_round(web.url, 3, 4)
    await client.wait_until(lambda c: len(c.of("connect")) >= 2, "a reconnect", 30)
    if not legacy:
        assert client.of("connect")[1]["recovered"] is True
    await check_round(client, merge(first, missed))
    assert len(client.of("subscribed")) == len(TOPICS)  # no subscribe after the reconnect
    assert not client.of("gap")


async def test_python_client_fails_over_with_its_resume_token(
    redis_server: RedisServer, processes: ProcessGroup
) -> None:
    """The Python client (python-socketio has no recovery of its own) sends the resume
    token when it fails over to another instance after a SIGKILL: the session comes
    back with no subscribe and no event twice (it would drop a duplicate: none came)."""
    settings = fresh_settings(redis_server)
    web = processes.web(settings)
    other = processes.web(settings)
    processes.worker(settings)
    watcher = await Watcher([web.url, other.url]).start(*TOPICS)
    first = await post_round(other.url, 0, 3)
    await watcher.wait_for_ids({t: ids[-1] for t, ids in first.items()})
    web.kill()
    missed = await post_round(other.url, 3, 4)
    await watcher.wait_for_ids({t: ids[-1] for t, ids in missed.items()})
    client = watcher.client
    assert client.stats.recovered == 1, client.stats
    assert client.url == other.url
    for topic in TOPICS:
        assert watcher.topic_ids(topic) == first[topic] + missed[topic]
    assert client.stats.duplicates == 0
    assert client.stats.gaps == 0
    await watcher.close()
