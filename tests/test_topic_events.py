"""`GET /api/v1/topics/{topic}/events`: history by time or id range, paged with a cursor,
under the subscribe rule; the query parsing is pure and tested directly."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.streamids import MAX_ID_PART
from realtime.web.topic_events import (
    MAX_LIMIT,
    QueryError,
    decode_cursor,
    encode_cursor,
    parse_query,
    position,
)
from tests.helpers.history import write_history
from tests.helpers.inprocess import running_app
from tests.helpers.tokens import SECRET, hs256

# -- pure: the query ------------------------------------------------------------------------


@pytest.mark.unit
def test_a_time_covers_its_whole_millisecond_and_an_id_is_exact() -> None:
    assert position("1700000000000", upper=False) == (1700000000000, 0)
    assert position("1700000000000", upper=True) == (1700000000000, MAX_ID_PART)
    assert position("1700000000000-3", upper=True) == (1700000000000, 3)


@pytest.mark.unit
def test_defaults_and_bounds() -> None:
    query = parse_query({})
    assert (query.start, query.end) == ((0, 0), (MAX_ID_PART, MAX_ID_PART))
    assert (query.limit, query.descending, query.since_start) == (100, False, False)
    query = parse_query({"from": "5", "to": "9-1", "limit": "3", "order": "desc"})
    assert (query.start, query.end) == ((5, 0), (9, 1))
    assert (query.limit, query.descending, query.since_start) == (3, True, True)


@pytest.mark.unit
def test_a_cursor_continues_after_the_last_event_in_either_order() -> None:
    cursor = encode_cursor((7, 2))
    assert decode_cursor(cursor) == (7, 2)
    assert parse_query({"cursor": cursor}).start == (7, 3)
    assert parse_query({"cursor": cursor, "order": "desc"}).end == (7, 1)
    assert parse_query({"cursor": encode_cursor((7, 0)), "order": "desc"}).end == (
        6,
        MAX_ID_PART,
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "1-2-3"}, "to"),
        ({"from": "١٢"}, "from"),  # Arabic-Indic digits are not a time
        ({"from": str(2**64)}, "from"),
        ({"limit": "0"}, "limit"),
        ({"limit": str(MAX_LIMIT + 1)}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "random"}, "order"),
        ({"cursor": "!!"}, "cursor"),
        ({"cursor": encode_cursor((1, 1))[:-2] + "zz"}, "cursor"),
        ({"since": "1-0"}, "since"),
    ],
)
def test_a_bad_parameter_is_named(query: dict[str, str], field: str) -> None:
    with pytest.raises(QueryError) as refused:
        parse_query(query)
    assert field in refused.value.fields


# -- the endpoint, against real Redis -------------------------------------------------------


async def get(url: str, topic: str, token: str | None = None, **query: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {k.rstrip("_"): str(v) for k, v in query.items()}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/v1/topics/{topic}/events", params=params, headers=headers) as r,
    ):
        return r.status, await r.json()


@pytest.mark.integration
async def test_a_time_range_pages_through_exactly_the_events_in_it(
    settings: Settings, redis: Redis
) -> None:
    ids = await write_history(redis, settings, "metrics.range", range(1000, 1100))
    async with running_app(settings) as url:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            extra = {"cursor": cursor} if cursor else {}
            status, body = await get(url, "metrics.range", from_=1010, to=1049, limit=15, **extra)
            assert status == 200, body
            assert body["complete"] is True
            seen += [event["id"] for event in body["events"]]
            cursor = body["next"]
            if cursor is None:
                break
        assert seen == ids[10:50]  # no gap, no duplicate across pages

        status, body = await get(url, "metrics.range", order="desc", limit=3)
        assert [event["id"] for event in body["events"]] == ids[-1:-4:-1]
        assert body["events"][0] == {
            "topic": "metrics.range",
            "id": "1099-0",
            "ts": 1099,
            "data": {"n": 1099},
        }


@pytest.mark.integration
async def test_a_range_older_than_history_says_where_history_starts(
    settings: Settings, redis: Redis
) -> None:
    await write_history(redis, settings, "metrics.old", range(100, 110))
    await redis.xtrim(Keys(settings.prefix).topic("metrics.old"), minid="105-0", approximate=False)
    async with running_app(settings) as url:
        status, body = await get(url, "metrics.old", from_=100)
        assert status == 200
        assert body["complete"] is False, body
        assert body["retained_from"] == "105-0"
        assert [event["ts"] for event in body["events"]] == list(range(105, 110))
        status, body = await get(url, "metrics.old", from_=106)
        assert body["complete"] is True
        status, body = await get(url, "metrics.none")
        assert (status, body["events"], body["retained_from"]) == (200, [], None)


@pytest.mark.integration
async def test_reading_history_takes_what_subscribing_takes(
    settings: Settings, redis: Redis
) -> None:
    await write_history(redis, settings, "metrics.secret", range(1, 3))
    secured = settings.with_overrides(jwt_secret=SECRET, insecure=False)
    async with running_app(secured) as url:
        status, body = await get(url, "metrics.secret")
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body = await get(url, "metrics.secret", hs256(["events.*"]))
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body = await get(url, "metrics.secret", hs256(["metrics.*"]))
        assert status == 200
        assert len(body["events"]) == 2
        status, body = await get(url, "metrics.secret", hs256(["metrics.*"]), limit=0)
        assert (status, body["error"]["code"]) == (400, "invalid")
        assert "limit" in body["error"]["fields"]
