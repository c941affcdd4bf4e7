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
