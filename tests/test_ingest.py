"""The ingest API against real Redis: what a producer sees, and what lands in the streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from tests.helpers.clients import Collector, post_events
from tests.helpers.inprocess import running_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with running_app(settings.with_overrides(max_body_bytes=4096, max_batch=10)) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: bytes | str) -> tuple[int, Any]:
    async with http.post(
        url + "/api/v1/events", data=body, headers={"Content-Type": "application/json"}
    ) as r:
        return r.status, await r.json()


async def ingest_lengths(redis: Redis, settings: Settings) -> int:
    keys = Keys(settings.prefix)
    return sum([await redis.xlen(keys.ingest(p)) for p in range(settings.partitions)])


async def test_one_event_is_stored_in_its_topic_partition(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings
) -> None:
    status, body = await post(
        http, base_url, '{"topic": "metrics.cpu", "data": {"value": 7}, "ts": 1234}'
    )
    assert status == 202
    [entry_id] = body["ids"]
    stream = Keys(settings.prefix).ingest(partition_of("metrics.cpu", settings.partitions))
    [(stored_id, fields)] = await redis.xrange(stream)
    assert stored_id.decode() == entry_id
    assert fields == {b"topic": b"metrics.cpu", b"ts": b"1234", b"data": b'{"value":7}'}


async def test_a_batch_answers_ids_in_request_order(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings
) -> None:
    events = [{"topic": f"t{i}", "data": {"i": i}} for i in range(10)]
    status, body = await post(http, base_url, json.dumps(events))
    assert status == 202
    assert len(body["ids"]) == 10
    keys = Keys(settings.prefix)
    for i, entry_id in enumerate(body["ids"]):
        stream = keys.ingest(partition_of(f"t{i}", settings.partitions))
        [(_, fields)] = await redis.xrange(stream, entry_id, entry_id)
        assert fields[b"topic"] == f"t{i}".encode()


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ("{not json", 400, "invalid_json", None),
        ("", 400, "invalid_json", None),
        ('"just a string"', 400, "invalid", "_schema"),
        ("[]", 400, "invalid", None),
        ('{"topic": "ok", "data": "text"}', 400, "invalid", "data"),
        ('{"topic": "ok", "data": {}, "ts": "yesterday"}', 400, "invalid", "ts"),
        ('{"topic": "ok", "data": {}, "colour": "red"}', 400, "invalid", "colour"),
        ('{"topic": "Not/Valid", "data": {}}', 400, "invalid", "topic"),
        ('[{"topic": "ok", "data": {}}, {"topic": "bad topic", "data": {}}]', 400, "invalid", "1"),
        ("[" + ",".join(['{"topic": "ok", "data": {}}'] * 11) + "]", 413, "too_large", None),
        ('{"topic": "ok", "data": {"blob": "' + "x" * 5000 + '"}}', 413, "too_large", None),
    ],
)
async def test_bad_input_gets_the_documented_error_and_writes_nothing(
    base_url: str,
    http: aiohttp.ClientSession,
    redis: Redis,
    settings: Settings,
    body: str,
    status: int,
    code: str,
    field: str | None,
) -> None:
    got_status, got = await post(http, base_url, body)
    assert got_status == status
    assert got["error"]["code"] == code
    assert got["error"]["message"]
    if field is not None:
        assert field in got["error"]["fields"]
    assert await ingest_lengths(redis, settings) == 0


async def test_deeply_nested_json_is_refused_not_crashed(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings
) -> None:
    # 2,000 levels fit in the 4 KiB body limit and exceed the decoder's depth limit.
    nested = '{"topic": "ok", "data": {"x": ' + "[" * 2000 + "]" * 2000 + "}}"
    status, body = await post(http, base_url, nested)
    assert status == 400
    assert body["error"]["code"] == "invalid_json"
    assert await ingest_lengths(redis, settings) == 0
    status, _ = await post(http, base_url, '{"topic": "ok", "data": {}}')
    assert status == 202


async def test_health_and_readiness(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(base_url + "/healthz") as r:
        assert r.status == 200
    async with http.get(base_url + "/readyz") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "ready"


async def test_an_idempotency_key_makes_a_retry_answer_the_same_id_and_store_nothing(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings
) -> None:
    event = {"topic": "metrics.cpu", "data": {"value": 1}, "key": "reading-42"}
    status, first = await post(http, base_url, json.dumps(event))
    assert status == 202
    # The producer did not get the answer and sends the request again.
    status, again = await post(http, base_url, json.dumps(event))
    assert (status, again) == (202, first)
    assert await ingest_lengths(redis, settings) == 1
    ttl = await redis.ttl(Keys(settings.prefix).idempotency("metrics.cpu", "reading-42"))
    assert 0 < ttl <= settings.idempotency_ttl_s


async def test_idempotency_keys_in_a_batch_with_and_without_keys(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings
) -> None:
    batch = [
        {"topic": "a", "data": {"n": 1}, "key": "k1"},
        {"topic": "a", "data": {"n": 2}},
        {"topic": "a", "data": {"n": 3}, "key": "k1"},  # the same event again
        {"topic": "b", "data": {"n": 4}, "key": "k1"},  # keys are per topic
    ]
    status, body = await post(http, base_url, json.dumps(batch))
    assert status == 202
    k1_a, plain, repeat, k1_b = body["ids"]
    assert repeat == k1_a != plain
    assert await ingest_lengths(redis, settings) == 3
    keys = Keys(settings.prefix)
    for topic, event_id, data in (("a", k1_a, b'{"n":1}'), ("b", k1_b, b'{"n":4}')):
        stream = keys.ingest(partition_of(topic, settings.partitions))
        [(_, fields)] = await redis.xrange(stream, event_id, event_id)
        assert fields[b"data"] == data


async def test_window_output_topics_are_refused_naming_the_pipeline(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings
) -> None:
    """Only the worker writes `metrics.cpu:1s` (the default pipeline's 1s window)."""
    status, body = await post(http, base_url, '{"topic": "metrics.cpu:1s", "data": {"value": 1}}')
    assert status == 400
    assert body["error"]["code"] == "invalid"
    assert body["error"]["fields"] == {
        "topic": [
            "metrics.cpu:1s is a window output of pipeline 'metrics'; only the worker writes it."
        ]
    }
    status, body = await post(
        http,
        base_url,
        '[{"topic": "metrics.cpu", "data": {}}, {"topic": "metrics.cpu:10s", "data": {}}]',
    )
    assert status == 400
    assert list(body["error"]["fields"]) == ["1"]
    assert await ingest_lengths(redis, settings) == 0  # nothing of the request is stored
    status, _ = await post(http, base_url, '{"topic": "other:1s", "data": {}}')
    assert status == 202  # no pipeline makes it


def nested_data(depth: int) -> str:
    """A `data` object `depth` levels deep (the object itself is level 1)."""
    return '{"x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("depth", [201, 252, 254, 255, 600, 1023])
async def test_data_deeper_than_the_worker_can_encode_is_refused_with_a_field_error(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings, depth: int
) -> None:
    # 251-254 got a 202 the worker could never encode (V1); 255-1024 answered 500 (V5).
    status, body = await post(http, base_url, f'{{"topic": "ok", "data": {nested_data(depth)}}}')
    assert status == 400
    assert body["error"]["code"] == "invalid"
    assert "200 levels" in body["error"]["fields"]["data"][0]
    assert await ingest_lengths(redis, settings) == 0


async def test_data_as_deep_as_the_limit_is_accepted(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    status, _ = await post(http, base_url, f'{{"topic": "ok", "data": {nested_data(200)}}}')
    assert status == 202


@pytest.mark.parametrize("number", ["18446744073709551616", "-9223372036854775809", "1" * 40])
async def test_integers_beyond_64_bits_are_refused_not_stored_as_floats(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings, number: str
) -> None:
    body = f'[{{"topic": "ok", "data": {{}}}}, {{"topic": "ok", "data": {{"n": [{number}]}}}}]'
    status, answer = await post(http, base_url, body)
    assert status == 400
    assert "64 bits" in answer["error"]["fields"]["1"]["data"][0]
    assert await ingest_lengths(redis, settings) == 0


async def test_64_bit_integers_and_large_floats_are_kept_exactly(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings
) -> None:
    data = '{"u": 18446744073709551615, "i": -9223372036854775808, "f": 1e300, "g": 2e19}'
    status, _ = await post(http, base_url, f'{{"topic": "ok", "data": {data}}}')
    assert status == 202
    stream = Keys(settings.prefix).ingest(partition_of("ok", settings.partitions))
    [(_, fields)] = await redis.xrange(stream)
    assert json.loads(fields[b"data"]) == {
        "u": 2**64 - 1, "i": -(2**63), "f": 1e300, "g": 2e19,
    }  # fmt: skip


async def test_idempotency_keys_of_different_topics_never_collide(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings
) -> None:
    """V2: `rt:idem:<topic>:<key>` made (orders:eu, 42) and (orders, eu:42) one key: the
    second event got the first one's id and was never stored."""
    first = {"topic": "orders:eu", "data": {"n": 1}, "key": "42"}
    second = {"topic": "orders", "data": {"n": 2}, "key": "eu:42"}
    _, a = await post(http, base_url, json.dumps(first))
    status, b = await post(http, base_url, json.dumps(second))
    assert status == 202
    assert await ingest_lengths(redis, settings) == 2
    # Each is stored under its own id in its own partition (ids are per stream: two
    # partitions may hand out the same one in the same millisecond).
    keys = Keys(settings.prefix)
    for event, answer in ((first, a), (second, b)):
        stream = keys.ingest(partition_of(event["topic"], settings.partitions))
        [(_, fields)] = await redis.xrange(stream, answer["ids"][0], answer["ids"][0])
        assert fields[b"topic"] == event["topic"].encode()


async def test_an_idempotency_key_stored_in_the_old_layout_still_deduplicates(
    base_url: str, http: aiohttp.ClientSession, redis: Redis, settings: Settings
) -> None:
    """An event accepted before the upgrade (its key `rt:idem:<topic>:<key>`) and sent
    again after it, within the TTL, is not stored twice."""
    old_id = "1700000000000-0"
    await redis.set(f"{settings.prefix}idem:orders:r-1", old_id, ex=60)
    status, body = await post(
        http, base_url, json.dumps({"topic": "orders", "data": {}, "key": "r-1"})
    )
    assert (status, body) == (202, {"ids": [old_id]})
    assert await ingest_lengths(redis, settings) == 0


def edge_events() -> list[dict[str, Any]]:
    """Valid events at the edges of what ingest accepts."""
    deepest: Any = {}
    for _ in range(199):
        deepest = {"d": deepest}
    return [
        {"topic": "edge.case", "data": deepest},
        {"topic": "edge.case", "data": {"u": 2**64 - 1, "i": -(2**63), "f": 1e300, "z": -0.0}},
        {"topic": "edge.case", "data": {"s": "\u0000\u001f\u2028\U0001f600 \"'\\/", "": None}},
        {"topic": "edge.case", "data": {"big": "x" * 65_000}},
        {"topic": "edge.case", "data": {}},
    ]


async def test_every_event_ingest_accepts_is_stored_and_delivered_exactly(
    worker: None, redis: Redis, settings: Settings
) -> None:
    """Promise 8: a 202 means the worker stores it and clients get the data as sent."""
    events = edge_events()
    async with running_app(settings) as url:
        client = await Collector().connect(url)
        try:
            await client.subscribe("edge.case")
            ids = await post_events(url, events)
            received = await client.wait_for(len(events))
        finally:
            await client.close()
    assert [e["id"] for e in received] == ids
    assert [e["data"] for e in received] == [e["data"] for e in events]
    history = await redis.xrange(Keys(settings.prefix).topic("edge.case"))
    assert [i.decode() for i, _ in history] == ids
    assert await redis.xlen(Keys(settings.prefix).dead_letters()) == 0
