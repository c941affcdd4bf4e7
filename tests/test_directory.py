"""The topic directory (`GET /api/v1/topics`): the worker's commits record each topic once
per batch; a reader pages them by name under the subscribe rule, drops the idle ones.
The rules are pure and tested directly; the rest runs a real worker against real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from processors.worker.consumer import Consumer
from realtime.core.directory import (
    LUA_RECORD,
    RATE_WINDOW_MS,
    SEEN_STEP_MS,
    CursorError,
    Info,
    decode_cursor,
    decode_info,
    encode_cursor,
    is_idle,
    lex_range,
    merge_names,
    newest,
    rate,
)
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from realtime.core.wire import UpdateEncoder
from realtime.delivery.directory import DirectoryReader, Listed
from realtime.web.topic_events import MAX_LIMIT, QueryError
from realtime.web.topics import listing as listing_of
from realtime.web.topics import parse_query
from tests.helpers.clients import Collector
from tests.helpers.inprocess import running_app
from tests.helpers.tokens import SECRET, hs256
from tests.helpers.waiting import eventually

# -- pure: cursor, query, ranges, merge, rate, idleness -------------------------------------


@pytest.mark.unit
def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    assert decode_cursor(encode_cursor("orders.eu:1s")) == "orders.eu:1s"
    for forged in ["!!", encode_cursor("Not A Topic"), encode_cursor("")]:
        with pytest.raises(CursorError):
            decode_cursor(forged)


@pytest.mark.unit
def test_the_query_has_defaults_and_names_each_bad_parameter() -> None:
    query = parse_query({})
    assert (query.prefix, query.limit, query.after) == ("", 100, None)
    query = parse_query({"prefix": "orders.", "limit": "7", "cursor": encode_cursor("orders.b")})
    assert (query.prefix, query.limit, query.after) == ("orders.", 7, "orders.b")
    with pytest.raises(QueryError) as refused:
        parse_query({"prefix": "Orders", "limit": str(MAX_LIMIT + 1), "cursor": "@@", "sort": "x"})
    assert sorted(refused.value.fields) == ["cursor", "limit", "prefix", "sort"]
    for bad in ["0", "-1", "ten", "\u0661"]:  # an Arabic-Indic digit is not a number
        with pytest.raises(QueryError):
            parse_query({"limit": bad})
    for prefix in [".x", "orders\n", "x" * 129]:  # no topic starts with these
        with pytest.raises(QueryError):
            parse_query({"prefix": prefix})


@pytest.mark.unit
def test_lex_ranges_cover_the_prefix_after_the_cursor() -> None:
    assert lex_range("", None) == ("-", "+")
    assert lex_range("ord", None) == ("[ord", "(ord{")
    assert lex_range("ord", "orders.b") == ("(orders.b", "(ord{")
    assert lex_range("ord", "alpha") == ("[ord", "(ord{")  # a cursor before the prefix
    assert max("abcdefghijklmnopqrstuvwxyz0123456789_.:-") < "{"


@pytest.mark.unit
def test_merging_partitions_stops_at_the_first_full_batch_end() -> None:
    # chunk 3: partition 0 is full up to "d", so nothing after "d" is certain yet.
    names, frontier = merge_names([["a", "c", "d"], ["b", "e"], []], 3)
    assert (names, frontier) == (["a", "b", "c", "d"], "d")
    names, frontier = merge_names([["a", "c"], ["b", "c"]], 3)  # one topic in two
    assert (names, frontier) == (["a", "b", "c"], None)
    assert merge_names([[], []], 5) == ([], None)


@pytest.mark.unit
def test_the_rate_slides_over_two_buckets_and_fades_to_zero() -> None:
    w = RATE_WINDOW_MS
    info = Info("1-0", 1, bucket=10, count=20, previous=40, seen_ms=10 * w)
    assert rate(info, 10 * w) == pytest.approx((20 + 40) / (w / 1000))
    assert rate(info, 10 * w + w // 2) == pytest.approx((20 + 20) / (w / 1000))
    assert rate(info, 11 * w + w // 4) == pytest.approx(20 * 0.75 / (w / 1000))
    assert rate(info, 12 * w) == 0.0


@pytest.mark.unit
def test_a_topic_is_idle_past_the_limit_and_records_are_read_safely() -> None:
    info = Info("5-0", 5, 0, 1, 0, seen_ms=1_000)
    assert not is_idle(info, now_ms=2_000, idle_ms=1_000)
    assert is_idle(info, now_ms=2_001, idle_ms=1_000)
    assert decode_info(b'["5-0", 5, 0, 1, 0, 1000]') == info
    assert decode_info(None) is None
    assert decode_info(b"garbage") is None
    assert decode_info(b'["5-0", 5]') is None
    older = Info("4-9", 4, 0, 1, 0, seen_ms=9_000)
    assert newest([older, info]) == info


@pytest.mark.unit
def test_a_topic_has_viewers_only_where_they_are_known() -> None:
    page = [Listed("a", "1-0", 1, 0.5), Listed("b", "2-0", 2, 0.0)]
    assert [t["viewers"] for t in listing_of(page, {"a": 3})] == [3, None]
    assert listing_of(page, {})[1] == {
        "topic": "b",
        "last_id": "2-0",
        "last_ts": 2,
        "rate": 0.0,
        "viewers": None,
    }


# -- with a real worker and real Redis ------------------------------------------------------


async def post(url: str, events: list[dict[str, Any]]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/api/v1/events", json=events) as response,
    ):
        assert response.status == 202, await response.text()


async def listing(url: str, token: str | None = None, **query: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {k: str(v) for k, v in query.items()}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/v1/topics", params=params, headers=headers) as response,
    ):
        return response.status, await response.json()


async def everything(url: str, token: str | None = None, **query: Any) -> list[dict[str, Any]]:
    """Every page, in order."""
    topics: list[dict[str, Any]] = []
    cursor = query.pop("cursor", None)
    while True:
        extra = {"cursor": cursor} if cursor else {}
        status, body = await listing(url, token, **query, **extra)
        assert status == 200, body
        topics += body["topics"]
        cursor = body["next"]
        if cursor is None:
            return topics


def names(topics: list[dict[str, Any]]) -> list[str]:
    return [t["topic"] for t in topics]


def listed(url: str, wanted: set[str], **query: Any) -> Callable[[], Any]:
    async def check() -> bool:
        return wanted <= set(names(await everything(url, **query)))

    return check


@pytest.mark.integration
@pytest.mark.usefixtures("worker")
async def test_the_directory_lists_exactly_the_topics_a_token_may_see(
    settings: Settings, redis: Redis
) -> None:
    topics = ["orders.eu", "orders.us", "orders.usa", "sensors.a", "private.x", "ordersx"]
    async with running_app(settings) as url:  # ingest (auth off)
        await post(url, [{"topic": t, "data": {"n": i}} for i in range(3) for t in topics])
        await eventually(listed(url, set(topics)), "every topic listed")
        # Auth off: every topic, with its last event as history has it, and its viewers.
        viewer = await Collector("viewer").connect(url)
        try:
            await viewer.subscribe("orders.eu")
            open_list = await everything(url)
        finally:
            await viewer.close()
        assert names(open_list) == sorted(topics)
        for item in open_list:
            last = await redis.xrevrange(Keys(settings.prefix).topic(item["topic"]), count=1)
            assert item["last_id"] == last[0][0].decode()
            assert item["last_ts"] == int(last[0][1][b"ts"])
            assert item["rate"] > 0
            assert item["viewers"] == (1 if item["topic"] == "orders.eu" else 0)
        assert names(await everything(url, prefix="orders.us")) == ["orders.us", "orders.usa"]

    secured = settings.with_overrides(jwt_secret=SECRET, insecure=False)
    async with running_app(secured) as url:
        token = hs256(["orders.*", "sensors.a"])
        seen = await everything(url, token)
        assert names(seen) == ["orders.eu", "orders.us", "orders.usa", "sensors.a"]
        assert names(await everything(url, token, prefix="orders.u", limit=1)) == [
            "orders.us",
            "orders.usa",
        ]
        assert names(await everything(url, hs256(["nothing.*"]))) == []
        status, body = await listing(url)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        status, body = await listing(url, token, limit=0, prefix="A")
        assert (status, body["error"]["code"]) == (400, "invalid")
        assert sorted(body["error"]["fields"]) == ["limit", "prefix"]


@pytest.mark.integration
@pytest.mark.usefixtures("worker")
async def test_pages_have_no_gap_and_no_duplicate(settings: Settings, redis: Redis) -> None:
    wanted = [f"pg.{i:03d}" for i in range(47)]
    others = ["pa.x", "pz.y", "a.b"]
    async with running_app(settings) as url:
        await post(url, [{"topic": t, "data": {}} for t in wanted + others])
        await eventually(listed(url, set(wanted + others)), "every topic listed")
        for limit in (1, 5, 46, 47, 1000):
            assert names(await everything(url, prefix="pg.", limit=limit)) == wanted
        # A new topic between two pages appears in the later page; none repeats.
        status, first = await listing(url, prefix="pg.", limit=10)
        assert status == 200
        await post(url, [{"topic": "pg.050", "data": {}}])
        await eventually(listed(url, {"pg.050"}), "the new topic")
        rest = await everything(url, prefix="pg.", limit=10, cursor=first["next"])
        assert names(first["topics"]) + names(rest) == [*wanted, "pg.050"]

    # A token that sees one topic in ten, read with a scan budget of 7 names per
    # request: short pages, each with a cursor, and still exactly the allowed topics.
    reader = DirectoryReader(redis, Keys(settings.prefix), settings.partitions, 60_000, 7)
    allowed = {t for t in wanted if int(t[3:]) % 10 == 0}
    got: list[str] = []
    after = None
    short = 0
    while True:
        page = await reader.page("pg.", after, 4, allowed.__contains__)
        got += [item.topic for item in page.topics]
        after = page.after
        if after is None:
            break
        short += len(page.topics) < 4
    assert got == sorted(allowed)
    assert short > 0  # the budget cut pages short, and the cursor went on


@pytest.mark.integration
@pytest.mark.usefixtures("worker")
async def test_topics_idle_past_the_limit_drop_out_and_are_removed(
    settings: Settings, redis: Redis
) -> None:
    idle = settings.with_overrides(directory_idle_s=1)
    keys = Keys(settings.prefix)
    async with running_app(idle) as url:
        await post(url, [{"topic": "quiet.one", "data": {}}, {"topic": "quiet.two", "data": {}}])
        await eventually(listed(url, {"quiet.one", "quiet.two"}), "both topics")

        async def only_busy_listed() -> bool:
            await post(url, [{"topic": "busy.one", "data": {}}])
            return names(await everything(url)) == ["busy.one"]

        await eventually(only_busy_listed, "the quiet topics dropped", timeout=15, interval=0.2)

        async def removed() -> bool:
            scores = [
                await redis.zscore(keys.directory(p)[0], t)
                for p in range(settings.partitions)
                for t in ("quiet.one", "quiet.two")
            ]
            return scores == [None] * len(scores)

        await eventually(removed, "the quiet topics removed from Redis")
        # A topic that comes back is listed again.
        await post(url, [{"topic": "quiet.one", "data": {}}])
        await eventually(listed(url, {"quiet.one"}), "the topic back")


@pytest.mark.integration
async def test_the_workers_commits_prune_idle_topics_without_any_reader(
    settings: Settings, redis: Redis
) -> None:
    idle = settings.with_overrides(directory_idle_s=1)
    quiet = "prune.quiet"
    busy = next(
        t
        for t in (f"prune.busy{n}" for n in range(100))
        if partition_of(t, idle.partitions) == partition_of(quiet, idle.partitions)
    )
    names_key = Keys(settings.prefix).directory(partition_of(quiet, idle.partitions))[0]
    stop = asyncio.Event()
    task = asyncio.create_task(Consumer(redis, UpdateEncoder.of(idle), idle).run(stop))
    try:
        async with running_app(settings) as url:  # a reader of a 24 h idle limit: no pruning
            await post(url, [{"topic": quiet, "data": {}}])

            async def recorded() -> bool:
                return await redis.zscore(names_key, quiet) is not None  # (its score is 0)

            await eventually(recorded, "the quiet topic recorded")

            async def pruned() -> bool:
                await post(url, [{"topic": busy, "data": {}}])  # a commit of its partition
                return await redis.zscore(names_key, quiet) is None

            await eventually(pruned, "the quiet topic pruned by a commit", timeout=15, interval=0.2)
            assert await redis.zscore(names_key, busy) == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.mark.integration
@pytest.mark.usefixtures("worker")
async def test_a_16_digit_ts_is_listed_exactly(settings: Settings) -> None:
    async with running_app(settings) as url:
        await post(url, [{"topic": "big.ts", "ts": 2**53 - 1, "data": {}}])
        await eventually(listed(url, {"big.ts"}), "the topic listed")
        [item] = await everything(url, prefix="big.")
        assert item["last_ts"] == 2**53 - 1


# One record_directory call per ARGV triple (topic, id, ts), one event each; a window so
# wide that every call falls in bucket 1 (bucket 0 is "the previous one").
_RECORD = (
    LUA_RECORD
    + """
local written = {}
for i = 1, #ARGV, 3 do written[ARGV[i]] = {ARGV[i + 1], ARGV[i + 2], 1} end
record_directory(KEYS[1], KEYS[2], KEYS[3], written, 86400000, 1000000000000)
"""
)


@pytest.mark.integration
async def test_the_commit_counts_on_from_records_in_its_own_form_and_in_any_other(
    settings: Settings, redis: Redis
) -> None:
    names, seen, info = keys = Keys.of(settings).directory(0)
    record = redis.register_script(_RECORD)
    await record(keys=keys, args=["a.one", "5-0", "5", "b.two", "6-0", "6"])
    await record(keys=keys, args=["a.one", "7-1", "7"])
    current = await redis.hget(info, "a.one")
    assert current is not None
    assert current.decode().startswith('["7-1","7",1,2,0,')  # cjson's bytes: 2 events
    # Written by cjson with other spacing, and one from the previous bucket.
    await redis.hset(info, mapping={"a.one": '["7-1", "7", 1, 7, 2, 0]'})
    await redis.hset(info, mapping={"b.two": '["6-0","6",0,4,1,0]'})
    await record(keys=keys, args=["a.one", "8-0", "8", "b.two", "9-0", "9"])
    a, b = [decode_info(raw) for raw in await redis.hmget(info, ["a.one", "b.two"])]
    assert a is not None
    assert (a.last_id, a.last_ts, a.count, a.previous) == ("8-0", 8, 8, 2)
    assert b is not None
    assert (b.last_id, b.count, b.previous) == ("9-0", 1, 4)
    assert await redis.zrange(names, 0, -1) == [b"a.one", b"b.two"]
    assert await redis.zcard(seen) == 2


@pytest.mark.integration
async def test_a_topic_seen_within_the_step_keeps_its_seen_time_in_both_keys(
    settings: Settings, redis: Redis
) -> None:
    names, seen, info = keys = Keys.of(settings).directory(0)
    record = redis.register_script(_RECORD)
    seconds, micros = await redis.time()
    now = seconds * 1000 + micros // 1000
    recent, old = now - SEEN_STEP_MS // 2, now - 5 * SEEN_STEP_MS
    # As earlier commits left them: the record's time and the score are the same.
    await redis.zadd(names, {"a.one": 0, "b.two": 0})
    await redis.zadd(seen, {"a.one": recent, "b.two": old})
    await redis.hset(
        info,
        mapping={"a.one": f'["5-0","5",1,1,0,{recent}]', "b.two": f'["6-0","6",1,1,0,{old}]'},
    )
    await record(keys=keys, args=["a.one", "7-0", "7", "b.two", "8-0", "8"])
    a, b = [decode_info(raw) for raw in await redis.hmget(info, ["a.one", "b.two"])]
    assert a is not None
    assert b is not None
    assert (a.last_id, a.count, a.seen_ms) == ("7-0", 2, recent)  # counted, time kept
    assert await redis.zscore(seen, "a.one") == recent
    assert (b.last_id, b.count) == ("8-0", 2)
    assert b.seen_ms >= now  # moved on, in both
    assert await redis.zscore(seen, "b.two") == b.seen_ms
