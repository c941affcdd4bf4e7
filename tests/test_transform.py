"""Unit tests: ingest entries become topic events."""

from __future__ import annotations

import orjson
import pytest

from processors.pipelines.transform import (
    IngestEvent,
    TopicEvent,
    TransformError,
    decode_entry,
    group_by_topic,
    passthrough,
)
from processors.worker.history_writes import HistoryTargets
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.wire import UpdateEncoder
from realtime.ingest.api import ingest_fields

pytestmark = pytest.mark.unit


def test_ingest_fields_round_trip_through_decode() -> None:
    fields = ingest_fields({"topic": "metrics.cpu", "data": {"value": 1.5}, "ts": 42}, now_ms=99)
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    event = decode_entry(b"100-1", raw)
    assert event == IngestEvent(id="100-1", topic="metrics.cpu", ts=42, data={"value": 1.5})


def test_missing_ts_takes_the_ingest_time() -> None:
    fields = ingest_fields({"topic": "t", "data": {}}, now_ms=99)
    assert decode_entry("1-0", fields).ts == 99


@pytest.mark.parametrize(
    "fields",
    [
        {"ts": "1", "data": "{}"},
        {"topic": "t", "data": "{}"},
        {"topic": "t", "ts": "x", "data": "{}"},
        {"topic": "t", "ts": "1", "data": "not json"},
        {"topic": "t", "ts": "1", "data": "[1]"},
        {"topic": "BAD", "ts": "1", "data": "{}"},
        {"topic": b"\xff", "ts": "1", "data": "{}"},
    ],
)
def test_malformed_entries_raise(fields: dict[str, str | bytes]) -> None:
    with pytest.raises(TransformError):
        decode_entry("1-0", fields)  # type: ignore[arg-type]


def test_passthrough_keeps_the_ingest_id() -> None:
    event = IngestEvent(id="5-3", topic="t", ts=1, data={"v": 1})
    assert passthrough(event) == [TopicEvent(topic="t", id="5-3", ts=1, data={"v": 1})]


def test_group_by_topic_keeps_order_within_and_across_topics() -> None:
    events = [
        TopicEvent("b", "1-0", 1, {}),
        TopicEvent("a", "1-1", 1, {}),
        TopicEvent("b", "2-0", 2, {}),
    ]
    grouped = group_by_topic(events)
    assert [topic for topic, _ in grouped] == ["b", "a"]
    assert [e["id"] for e in grouped[0][1]] == ["1-0", "2-0"]
    assert grouped[0][1][0] == {"topic": "b", "id": "1-0", "ts": 1, "data": {}}


def test_the_entrys_json_is_kept_for_history_and_fan_out_as_it_is() -> None:
    """Pass-through writes the entry's `data` bytes, not `data` encoded again."""
    raw = b'{"value":1.5,"tags":["a"]}'
    event = decode_entry(b"1-0", {b"topic": b"t", b"ts": b"1", b"data": raw})
    assert event.raw is raw
    history = HistoryTargets(Keys("rt:")).write(event.topic, event.id, 1, event.data, event.raw)
    assert history.fields == ["ts", "1", "data", raw.decode()]
    [(_, message)] = UpdateEncoder(Keys("rt:"), "h").encode_updates(
        [("t", [{"topic": "t", "id": "1-0", "ts": 1, "data": orjson.Fragment(event.raw)}])]
    )
    assert b'"data":[[{"topic":"t","id":"1-0","ts":1,"data":' + raw + b"}]]" in message


def nested(depth: int) -> bytes:
    return b'{"x":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


@pytest.mark.parametrize("depth", [250, 251, 300])
def test_data_the_message_may_not_hold_is_encoded_again_and_fails_as_before(depth: int) -> None:
    """Only data that is surely shallow enough is kept as it is: deeper data (not from
    the ingest API, which refuses it) is encoded again, so the fan-out message fails to
    encode for it exactly as when the worker always encoded `data`."""
    event = decode_entry(b"1-0", {b"topic": b"t", b"ts": b"1", b"data": nested(depth)})
    data = orjson.Fragment(event.raw) if event.raw else event.data
    wire = {"topic": "t", "id": "1-0", "ts": 1, "data": data}
    encoder = UpdateEncoder(Keys("rt:"), "h")
    if depth > 250:
        assert event.raw == b""
        with pytest.raises(jsoncodec.JSONEncodeError):
            encoder.encode_updates([("t", [wire])])
    else:
        assert event.raw
        encoder.encode_updates([("t", [wire])])


def test_short_data_is_always_kept() -> None:
    """At most 500 bytes: at most 250 levels deep, whatever it holds."""
    data = b'{"s":"' + b"[" * 480 + b'"}'
    assert decode_entry(b"1-0", {b"topic": b"t", b"ts": b"1", b"data": data}).raw is data
