"""Resume and snapshots over Socket.IO against real Redis: `subscribe {topic, since}`,
`{snapshot: n}`, the ack fields, and the order ack -> replay -> live."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.settings import Settings
from tests.helpers.clients import Collector, post_events
from tests.helpers.history import write_history
from tests.helpers.inprocess import running_app

pytestmark = pytest.mark.integration


def updates(client: Collector) -> list[list[str]]:
    return [[e["id"] for e in payload] for kind, payload in client.log if kind == "update"]


async def test_resume_replays_after_since_then_continues_live(
    client: Collector, base_url: str, worker: None
) -> None:
    live = await Collector("live").connect(base_url)
    await live.subscribe("r.a")
    ids = await post_events(base_url, [{"topic": "r.a", "data": {"n": n}} for n in range(5)])
    await live.wait_for_id(ids[-1])

    ack = await client.subscribe("r.a", since=ids[1])
    assert ack == {"ok": True, "topic": "r.a", "recovered": True}
    await client.wait_for_id(ids[-1])
    ids += await post_events(base_url, [{"topic": "r.a", "data": {"n": n}} for n in (5, 6)])
    await client.wait_for_id(ids[-1])

    assert client.log[0] == ("ack", ack)  # the ack first, then the replay, then live
    assert [e["id"] for e in client.events] == ids[2:]
    await live.close()


async def test_since_older_than_history_is_not_recovered_and_gets_a_snapshot(
    client: Collector, redis: Redis, settings: Settings
) -> None:
    # History holds 5-0..9-0: whatever came before 5-0 was trimmed.
    await write_history(redis, settings, "r.b", range(5, 10))

    ack = await client.subscribe("r.b", since="2-0")
    assert ack["recovered"] is False
    assert [e["id"] for e in ack["events"]] == ["9-0"]  # the newest event, by default
    assert ack["since"] == "9-0"
    assert ack["events"][0] == {"topic": "r.b", "id": "9-0", "ts": 9, "data": {"n": 9}}

    ack = await client.subscribe("r.b", since="1-0", snapshot=3)
    assert (ack["recovered"], [e["id"] for e in ack["events"]]) == (False, ["7-0", "8-0", "9-0"])

    # The oldest event still there is a position history covers.
    ack = await client.subscribe("r.b", since="5-0")
    assert ack == {"ok": True, "topic": "r.b", "recovered": True}
    await client.wait_for_id("9-0")
    assert updates(client) == [["6-0", "7-0", "8-0", "9-0"]]


async def test_since_on_a_topic_without_history_is_not_recovered(client: Collector) -> None:
    ack = await client.subscribe("r.empty", since="1700000000000-0")
    assert ack == {
        "ok": True,
        "topic": "r.empty",
        "recovered": False,
        "events": [],
        "since": "0-0",
    }


async def test_a_plain_ack_says_where_to_resume_from_even_if_nothing_arrives(
    client: Collector, redis: Redis, settings: Settings
) -> None:
    assert (await client.subscribe("r.quiet"))["since"] == "0-0"
    # Resuming from 0-0 (subscribed before the topic had history) replays it all.
    written = await write_history(redis, settings, "r.quiet", range(1, 4))
    other = await Collector("other").connect(client.client.connection_url)
    assert await other.subscribe("r.quiet", since="0-0") == {
        "ok": True,
        "topic": "r.quiet",
        "recovered": True,
    }
    await other.wait_for_id(written[-1])
    assert [e["id"] for e in other.events] == written
    assert (await other.subscribe("r.quiet"))["since"] == "3-0"
    await other.close()


async def test_resuming_from_0_0_after_history_was_trimmed_is_not_recovered(
    client: Collector, redis: Redis, settings: Settings
) -> None:
    settings = settings.with_overrides(history_maxlen=3)  # as the app's, below
    await write_history(redis, settings, "r.full", range(1, 5))
    await redis.xtrim(Keys(settings.prefix).topic("r.full"), maxlen=3, approximate=False)
    async with running_app(settings) as url:
        other = await Collector("other").connect(url)
        ack = await other.subscribe("r.full", since="0-0")
        assert (ack["recovered"], [e["id"] for e in ack["events"]]) == (False, ["4-0"])
        await other.close()


async def test_snapshot_puts_the_newest_events_in_the_ack(
    client: Collector, redis: Redis, settings: Settings, base_url: str, worker: None
) -> None:
    await write_history(redis, settings, "r.c", range(1, 6))
    ack = await client.subscribe("r.c", snapshot=2)
    assert [e["id"] for e in ack["events"]] == ["4-0", "5-0"]
    assert (await client.subscribe("r.none", snapshot=2))["events"] == []
    # Then live events only, nothing older.
    [new] = await post_events(base_url, {"topic": "r.c", "data": {}})
    await client.wait_for_id(new)
    assert [e["id"] for e in client.events] == [new]


async def test_a_long_replay_comes_in_pages_in_order(
    client: Collector, redis: Redis, settings: Settings
) -> None:
    written = await write_history(redis, settings, "r.long", range(1, 1201))
    ack = await client.subscribe("r.long", since="1-0")
    assert ack["recovered"] is True
    await client.wait_for_id(written[-1])
    assert [e["id"] for e in client.events] == written[1:]
    assert [len(u) for u in updates(client)] == [500, 500, 199]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": 1700000000000}, "since"),
        ({"since": "17-0-1"}, "since"),
        ({"snapshot": -1}, "snapshot"),
        ({"snapshot": 1001}, "snapshot"),
        ({"snapshot": True}, "snapshot"),
        ({"snapshot": "3"}, "snapshot"),
    ],
)
async def test_bad_since_or_snapshot_gets_an_error_ack(
    client: Collector, options: dict[str, Any], field: str
) -> None:
    ack = await client.call("subscribe", {"topic": "r.d", **options})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "invalid"
    assert field in ack["error"]["fields"]
