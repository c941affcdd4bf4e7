"""Unit tests: the ingest and subscribe schemas."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError

from realtime.ingest.schemas import EventSchema, SubscribeSchema, UnsubscribeSchema, field_errors

pytestmark = pytest.mark.unit


def load_event(payload: Any) -> dict[str, Any]:
    result: dict[str, Any] = EventSchema().load(payload)
    return result


def errors_of(schema: Any, payload: Any, **kw: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        schema.load(payload, **kw)
    return field_errors(info.value)


def test_minimal_event_is_accepted() -> None:
    assert load_event({"topic": "metrics.cpu", "data": {"value": 1}}) == {
        "topic": "metrics.cpu",
        "data": {"value": 1},
    }


def test_full_event_is_accepted() -> None:
    event = {
        "topic": "a:b-c_d.e",
        "data": {"nested": {"x": [1, 2]}},
        "ts": 1700000000000,
        "key": "k1",
    }
    assert load_event(event) == event


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"data": {}}, "topic"),
        ({"topic": "ok"}, "data"),
        ({"topic": "Upper", "data": {}}, "topic"),
        ({"topic": "-leading", "data": {}}, "topic"),
        ({"topic": "a" * 129, "data": {}}, "topic"),
        ({"topic": "sp ace", "data": {}}, "topic"),
        ({"topic": 5, "data": {}}, "topic"),
        ({"topic": "ok", "data": [1, 2]}, "data"),
        ({"topic": "ok", "data": "text"}, "data"),
        ({"topic": "ok", "data": {}, "ts": "1700000000000"}, "ts"),
        ({"topic": "ok", "data": {}, "ts": 1.5}, "ts"),
        ({"topic": "ok", "data": {}, "ts": True}, "ts"),
        ({"topic": "ok", "data": {}, "ts": -1}, "ts"),
        ({"topic": "ok", "data": {}, "key": ""}, "key"),
        ({"topic": "ok", "data": {}, "extra": 1}, "extra"),
    ],
)
def test_bad_event_names_the_field(payload: dict[str, Any], field: str) -> None:
    assert set(errors_of(EventSchema(), payload)) == {field}


def test_topic_error_explains_the_rule() -> None:
    message = errors_of(EventSchema(), {"topic": "Bad", "data": {}})["topic"][0]
    assert "lowercase" in message
    assert "^[a-z0-9]" in message


def test_batch_errors_are_keyed_by_index_as_strings() -> None:
    errors = errors_of(
        EventSchema(), [{"topic": "ok", "data": {}}, {"topic": "BAD", "data": {}}], many=True
    )
    assert list(errors) == ["1"]
    assert "topic" in errors["1"]


@pytest.mark.parametrize("schema", [SubscribeSchema(), UnsubscribeSchema()])
def test_subscription_requests(schema: Any) -> None:
    assert schema.load({"topic": "metrics.cpu"}) == {"topic": "metrics.cpu"}
    assert set(errors_of(schema, {"topic": "NO"})) == {"topic"}
    assert set(errors_of(schema, {})) == {"topic"}
    assert set(errors_of(schema, {"topic": "ok", "bogus": 1})) == {"bogus"}
    assert set(errors_of(schema, "metrics.cpu")) == {"_schema"}


# Strings that pass a `re.match` with `$`, or a `\d`, but that nothing downstream
# reads as the same value: each must be refused by the schema itself.
BAD_TOPICS = ["metrics.x\n", "metrics.\u0661", "m\uff45trics", "metrics.x\n\n", "\nmetrics"]
BAD_SINCE = [
    "1-0\n",
    "99999999999999999999-0",
    "0-18446744073709551616",
    "18446744073709551616-0",
    "\u0661\u0662-0",
    "\uff11-0",
    "1-0 ",
    " 1-0",
    "1-",
    "-0",
    "1",
    "1-0-0",
]


@pytest.mark.parametrize("topic", BAD_TOPICS)
@pytest.mark.parametrize("schema", [EventSchema(), SubscribeSchema(), UnsubscribeSchema()])
def test_topics_match_the_whole_ascii_rule(schema: Any, topic: str) -> None:
    """V3: a trailing newline passed `re.match(...$)`: ingest answered 202 to a topic the
    worker then dead-lettered, and subscribe acked it."""
    payload = {"topic": topic, "data": {}} if "data" in schema.fields else {"topic": topic}
    assert set(errors_of(schema, payload)) == {"topic"}


@pytest.mark.parametrize("since", BAD_SINCE)
def test_since_is_exactly_a_stream_id_within_64_bits(since: str) -> None:
    """V4: each of these passed the schema and then failed `parse_id` (no ack), or was
    read as another id (Arabic-Indic digits)."""
    assert set(errors_of(SubscribeSchema(), {"topic": "ok", "since": since})) == {"since"}


def test_the_largest_stream_id_is_accepted() -> None:
    top = f"{2**64 - 1}-{2**64 - 1}"
    assert SubscribeSchema().load({"topic": "ok", "since": top})["since"] == top
