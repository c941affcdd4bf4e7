"""Unit tests: ingest entries become topic events."""

from __future__ import annotations

import pytest

from processors.pipelines.transform import (
    IngestEvent,
    TopicEvent,
    TransformError,
    decode_entry,
    group_by_topic,
    passthrough,
)
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
