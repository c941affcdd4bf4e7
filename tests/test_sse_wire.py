"""The SSE wire format of `GET /api/v1/stream` (pure): the position in `id:`, the
messages, and the query rules."""

from __future__ import annotations

import orjson
import pytest

from realtime.core import sse
from realtime.web.stream import QueryError, parse_query

pytestmark = pytest.mark.unit


def test_a_position_names_every_topic_and_round_trips() -> None:
    cursors = {"b.mem": (1700000000001, 3), "a.cpu": (1700000000000, 0)}
    text = sse.encode_position(cursors)
    assert text == "a.cpu=1700000000000-0,b.mem=1700000000001-3"
    assert sse.decode_position(text) == cursors
    assert sse.decode_position("") == {}


@pytest.mark.parametrize(
    "text", ["a.cpu", "a.cpu=", "a.cpu=1-x", "A=1-0", "a=1-0,a=2-0", "a=1-0;b=2-0", "=1-0"]
)
def test_a_position_this_server_did_not_give_is_refused(text: str) -> None:
    with pytest.raises(sse.PositionError):
        sse.decode_position(text)


def test_an_update_is_one_message_with_one_line_of_json() -> None:
    event = {"topic": "a", "id": "1-0", "ts": 1, "data": {"text": "two\nlines"}}
    raw = sse.message(sse.UPDATE, event, "a=1-0")
    assert raw.endswith(b"\n\n")
    assert raw.count(b"\n") == 4
    head, data = raw.split(b"data: ")
    assert head == b"event: update\nid: a=1-0\n"
    assert orjson.loads(data) == event
    assert sse.position_only("a=1-0") == b"id: a=1-0\n\n"
    assert sse.retry(1500) == b"retry: 1500\n\n"


def test_starts_come_from_last_event_id_then_since_then_now() -> None:
    query = parse_query(["a", "b", "c", "a"], {"since": "5-0"}, "a=7-1,z=9-0", 10)
    assert query.starts == {"a": (7, 1), "b": (5, 0), "c": (5, 0)}
    assert parse_query(["a"], {}, "", 10).starts == {"a": None}
    assert parse_query(["a"], {"snapshot": "3"}, "", 10).snapshot == 3
    assert parse_query(["a"], {}, "", 10).max_rate is None
    assert parse_query(["a"], {"max_rate": "2.5"}, "", 10).max_rate == 2.5
    assert parse_query(["a"], {"max_rate": "0.01"}, "", 10).max_rate == 0.01


@pytest.mark.parametrize(
    ("topics", "query", "last", "field"),
    [
        ([], {}, "", "topic"),
        (["Bad Topic"], {}, "", "topic"),
        (["a", "b", "c"], {}, "", "topic"),
        (["a"], {"since": "soon"}, "", "since"),
        (["a"], {"snapshot": "-1"}, "", "snapshot"),
        (["a"], {}, "garbage", "last_event_id"),
        (["a"], {"max_rate": "0"}, "", "max_rate"),
        (["a"], {"max_rate": "101"}, "", "max_rate"),
        (["a"], {"max_rate": "nan"}, "", "max_rate"),
        (["a"], {"max_rate": "1e2"}, "", "max_rate"),
        (["a"], {"max_rate": "-2"}, "", "max_rate"),
    ],
)
def test_a_bad_parameter_is_named(
    topics: list[str], query: dict[str, str], last: str, field: str
) -> None:
    with pytest.raises(QueryError) as refused:
        parse_query(topics, query, last, 2)
    assert field in refused.value.fields
