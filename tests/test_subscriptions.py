"""Socket.IO subscribe/unsubscribe: acks, error acks, and what a client then receives."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.clients import Collector, post_events

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "topic"),
        ({"topic": "Has Spaces"}, "topic"),
        ({"topic": 42}, "topic"),
        ({"topic": "ok", "unexpected": True}, "unexpected"),
        ({"topic": "ok", "max_rate": 0}, "max_rate"),
        ({"topic": "ok", "max_rate": 1000}, "max_rate"),
        ({"topic": "ok", "max_rate": "5"}, "max_rate"),
        ({"topic": "ok", "max_rate": True}, "max_rate"),
        ("metrics.cpu", "_schema"),
        (["metrics.cpu"], "_schema"),
        (None, "_schema"),
    ],
)
async def test_invalid_subscribe_gets_an_error_ack(
    client: Collector, payload: Any, field: str
) -> None:
    ack = await client.call("subscribe", payload)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "invalid"
    assert field in ack["error"]["fields"]
    # The connection stays usable.
    assert (await client.call("subscribe", {"topic": "still.fine"}))["ok"] is True


async def test_invalid_unsubscribe_gets_an_error_ack(client: Collector) -> None:
    ack = await client.call("unsubscribe", {"topic": "NOPE"})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "invalid"


async def test_subscribe_ack_names_the_topic(client: Collector) -> None:
    # `since`: where the subscription starts (no history yet: 0-0), to resume from.
    assert await client.call("subscribe", {"topic": "metrics.cpu"}) == {
        "ok": True,
        "topic": "metrics.cpu",
        "since": "0-0",
    }
    assert await client.call("unsubscribe", {"topic": "metrics.cpu"}) == {
        "ok": True,
        "topic": "metrics.cpu",
    }


async def test_unsubscribed_topics_stop_arriving(
    client: Collector, base_url: str, worker: None
) -> None:
    await client.subscribe("sub.a")
    await client.subscribe("sub.b")
    [first] = await post_events(base_url, {"topic": "sub.a", "data": {"n": 1}})
    await client.wait_for(1)
    await client.call("unsubscribe", {"topic": "sub.a"})
    await post_events(base_url, {"topic": "sub.a", "data": {"n": 2}})
    [marker] = await post_events(base_url, {"topic": "sub.b", "data": {}})
    await client.wait_for(2)
    assert [e["id"] for e in client.events] == [first, marker]


async def test_unknown_events_and_extra_arguments_do_not_break_the_connection(
    client: Collector, base_url: str, worker: None
) -> None:
    await client.client.emit("no.such.event", {"x": 1})
    ack = await client.call("subscribe", ({"topic": "a"}, {"topic": "b"}))
    assert ack["ok"] is False
    await client.subscribe("still.works")
    [event_id] = await post_events(base_url, {"topic": "still.works", "data": {}})
    await client.wait_for(1)
    assert client.events[0]["id"] == event_id
