"""Each limit of the "Limits" table in docs/security.md: hit it, see the documented error, and see
the server still serving (promise 6). The web app runs in the test's loop, real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import socketio

from realtime.core import jsoncodec
from realtime.core.settings import Settings
from realtime.web.app import ACCESS
from tests.helpers.inprocess import running_app, serving
from tests.helpers.tokens import INGEST_KEY, INGEST_KEYS, METRICS_KEY

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, key: str | None = None
) -> tuple[int, Any, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with http.post(url + "/api/v1/events", data=json.dumps(body), headers=headers) as r:
        return r.status, await r.json(), r.headers


async def healthy(http: aiohttp.ClientSession, url: str, key: str | None = None) -> None:
    async with http.get(url + "/healthz") as r:
        assert r.status == 200
    status, body, _ = await post(http, url, {"topic": "metrics.ok", "data": {}}, key)
    assert status == 202, body


async def connect(url: str, **kwargs: Any) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
    await client.connect(url, transports=["websocket"], wait_timeout=10, **kwargs)
    return client


async def test_event_data_over_the_limit_is_413_naming_the_event(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with running_app(settings.with_overrides(max_event_bytes=100)) as url:
        small, big = {"topic": "ok", "data": {"v": 1}}, {"topic": "ok", "data": {"b": "x" * 100}}
        status, body, _ = await post(http, url, [small, big, small])
        assert status == 413
        assert body["error"]["code"] == "too_large"
        assert list(body["error"]["fields"]) == ["1"]
        assert "limit is 100" in body["error"]["fields"]["1"]["data"][0]
        status, body, _ = await post(http, url, big)
        assert (status, list(body["error"]["fields"])) == (413, ["data"])
        await healthy(http, url)


async def test_the_ingest_rate_per_key_holds_across_instances(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    limited = Settings.from_env(
        {"REALTIME_INGEST_KEYS": INGEST_KEYS, "REALTIME_INGEST_RATE": "5"},
        redis_url=settings.redis_url,
        prefix=settings.prefix,
        insecure=True,
    )
    event = {"topic": "metrics.cpu", "data": {}}
    async with running_app(limited) as a, running_app(limited) as b:
        # Within one window (one second): retry the whole check if the window turned.
        for _ in range(5):
            assert (await post(http, a, [event] * 3, METRICS_KEY))[0] == 202
            first = await post(http, b, [event] * 2, METRICS_KEY)
            refused = await post(http, b, [event], METRICS_KEY)
            if first[0] == 202 and refused[0] == 429:
                break
            await asyncio.sleep(1.1)  # a new window
        status, body, headers = refused
        assert status == 429
        assert body["error"]["code"] == "limit"
        assert "5 events/s" in body["error"]["message"]
        assert 1 <= int(headers["Retry-After"]) <= 1
        # Another key has its own budget; the limited one is served again after the wait.
        assert (await post(http, a, event, INGEST_KEY))[0] == 202
        await asyncio.sleep(int(headers["Retry-After"]))
        await healthy(http, b, METRICS_KEY)


async def test_subscriptions_per_connection(settings: Settings) -> None:
    async with running_app(settings.with_overrides(max_subscriptions=3)) as url:
        client = await connect(url)
        try:
            for topic in ("a", "b", "c", "c"):  # again: not a new subscription
                assert (await client.call("subscribe", {"topic": topic}))["ok"]
            ack = await client.call("subscribe", {"topic": "d"})
            assert ack["ok"] is False
            assert ack["error"]["code"] == "limit"
            assert "At most 3 subscriptions" in ack["error"]["message"]
            assert (await client.call("unsubscribe", {"topic": "a"}))["ok"]
            assert (await client.call("subscribe", {"topic": "d"}))["ok"]
        finally:
            await client.disconnect()


async def test_subscribe_rate_per_connection(settings: Settings) -> None:
    # Bursts of up to max_subscriptions, then subscribe_rate per second: a slow rate, so
    # slow round trips on a busy machine cannot refill the burst mid-test.
    overrides = {"max_subscriptions": 4, "subscribe_rate": 0.5}
    async with running_app(settings.with_overrides(**overrides)) as url:
        client, other = await connect(url), await connect(url)
        try:
            acks = [await client.call("unsubscribe", {"topic": f"t{i}"}) for i in range(5)]
            assert [a["ok"] for a in acks] == [True] * 4 + [False]
            assert acks[4]["error"]["code"] == "limit"
            assert "at most 0.5/s" in acks[4]["error"]["message"]
            assert (await other.call("subscribe", {"topic": "x"}))["ok"]  # its own budget
            await asyncio.sleep(2.1)  # refills one
            assert (await client.call("subscribe", {"topic": "x"}))["ok"]
        finally:
            await client.disconnect()
            await other.disconnect()


async def test_connections_per_instance(settings: Settings) -> None:
    async with running_app(settings.with_overrides(max_connections=2)) as url:
        first, second = await connect(url), await connect(url)
        refused: list[Any] = []
        third = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
        third.on("connect_error", refused.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await third.connect(url, transports=["websocket"], wait_timeout=10)
        await third.shutdown()
        assert refused[0]["data"] == {"code": "limit"}
        assert "limit of 2 connections" in refused[0]["message"]
        assert (await second.call("subscribe", {"topic": "still.served"}))["ok"]
        await first.disconnect()
        fourth = await connect(url)  # a place is free again
        assert (await fourth.call("subscribe", {"topic": "ok"}))["ok"]
        for c in (second, fourth):
            await c.disconnect()


async def test_the_connection_limit_counts_clients_in_any_namespace(settings: Settings) -> None:
    """A client only in an extension's namespace counts; one in `/` and `/chat` counts
    once; a connect an extension refuses frees its place."""
    overrides = {"max_connections": 2, "extensions": ("tests.helpers.ext_probe:setup",)}
    async with running_app(settings.with_overrides(**overrides)) as url:
        chat_only = await connect(url, namespaces=["/chat"])
        both = await connect(url, namespaces=["/", "/chat"])

        for namespaces in (["/"], ["/chat"]):
            refused: list[Any] = []
            late = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
            late.on("connect_error", refused.append, namespace=namespaces[0])
            with pytest.raises(socketio.exceptions.ConnectionError):
                await late.connect(url, namespaces=namespaces, transports=["websocket"])
            await late.shutdown()
            assert [r["data"] for r in refused] == [{"code": "limit"}], namespaces

        await chat_only.disconnect()
        for _ in range(3):  # refused by the extension, after the limit let it in
            refused = []
            picky = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
            picky.on("connect_error", refused.append, namespace="/chat")
            with pytest.raises(socketio.exceptions.ConnectionError):
                await picky.connect(
                    url, namespaces=["/chat"], auth={"refuse": "no"}, transports=["websocket"]
                )
            await picky.shutdown()
            assert refused == [{"message": "no"}], refused
        last = await connect(url)  # no place was kept by the refusals
        assert (await last.call("subscribe", {"topic": "ok"}))["ok"]
        for c in (both, last):
            await c.disconnect()


async def test_a_clients_own_events_are_rate_limited_across_its_namespaces(
    settings: Settings,
) -> None:
    """An extension's events, in `/` and `/chat` together, at most `event_rate` a second
    (bursts of as many, at least one); over it the ack is `limit` and no handler runs.
    Subscribe has its own budget, and each client its own. A slow rate, so a busy
    machine's slow round trips cannot refill the budget in the middle."""
    overrides = {"event_rate": 0.5, "extensions": ("tests.helpers.ext_probe:setup",)}
    async with serving(settings.with_overrides(**overrides)) as (url, app):
        client = await connect(url, namespaces=["/", "/chat"])
        other = await connect(url)
        try:
            answers = [
                await client.call("hyphen-ated", 1),
                await client.call("say", "hi", namespace="/chat"),
                await client.call("hyphen-ated", 2),
            ]
            assert answers[0] == {"got": [1]}
            for refused, event in zip(answers[1:], ["'say'", "'hyphen-ated'"], strict=True):
                assert refused["ok"] is False
                assert refused["error"]["code"] == "limit"
                message = refused["error"]["message"]
                assert f"at most 0.5/s per connection; this {event} was not handled" in message
            assert (await client.call("subscribe", {"topic": "x"}))["ok"]  # its own budget
            assert await other.call("hyphen-ated", 4) == {"got": [4]}  # each client its own
            await asyncio.sleep(2.1)  # refills one
            assert await client.call("say", "later", namespace="/chat") == ("heard", "later")
        finally:
            await client.disconnect()
            await other.disconnect()
        # A client's budget goes with its last namespace: nothing is kept per gone client.
        buckets = app[ACCESS]._event_buckets
        for _ in range(100):
            if not buckets:
                break
            await asyncio.sleep(0.05)
        assert buckets == {}


async def test_a_packet_over_the_size_limit_closes_only_that_connection(
    settings: Settings,
) -> None:
    async with running_app(settings.with_overrides(max_message_bytes=1024)) as url:
        big, bystander = await connect(url), await connect(url)
        closed = asyncio.Event()
        big.on("disconnect", lambda *reason: closed.set())
        await big.emit("subscribe", {"topic": "t" * 2000})
        await asyncio.wait_for(closed.wait(), 10)
        assert (await bystander.call("subscribe", {"topic": "still.served"}))["ok"]
        await bystander.disconnect()
        await big.shutdown()


async def test_a_connection_that_joins_no_namespace_is_closed(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    async with running_app(settings.with_overrides(connect_timeout_s=0.5)) as url:
        client = await connect(url)
        async with http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket") as idle:
            assert (await idle.receive_str(timeout=10)).startswith("0{")
            frames = []
            async for message in idle:  # until the server closes it
                frames.append(message.data)
            assert idle.closed
            assert "1" in frames or frames == []  # a CLOSE packet, or just the close
        # The client that did connect to `/` in time stays.
        assert (await client.call("subscribe", {"topic": "still.served"}))["ok"]
        await client.disconnect()
