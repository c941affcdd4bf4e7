"""Unit tests: ingest's fast validation against the marshmallow schema (the reference).

The fast check may only say "valid" where the schema loads the same events unchanged and
the exact-integer check finds nothing; everything else goes to the schema, which writes
every error. Bodies are generated as JSON text (with integers beyond 64 bits, deep
nesting, wrong types, unknown fields) and decoded as the handler decodes them.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from realtime.ingest.api import _big_integers
from realtime.ingest.fastcheck import plain_subscribe, valid_events
from realtime.ingest.schemas import MAX_DATA_DEPTH, EventSchema, SubscribeSchema

pytestmark = pytest.mark.unit

SCHEMA = EventSchema()

topics = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,20}", fullmatch=True),
    st.sampled_from(["", "A", "metrics.cpu\n", "-x", "a" * 128, "a" * 129, "é", "a b"]),
    st.integers(),
    st.none(),
    st.booleans(),
)
integers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([-(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 2**53, 2**53 + 1, 0, -1]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    integers,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e19, -1e19, 9.3e18, 2.0**63, 2.0**64, 0.5]),
    st.text(max_size=5),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep, lists and objects in turn."""
    value: Any = {"x": 1}
    for n in range(depth - 1):
        value = {"a": value} if n % 2 == depth % 2 else [value]
    assert isinstance(value, dict)
    return value


boundaries = st.sampled_from([2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 2**70, 1e19, 2.0**63])
datas = st.one_of(
    st.dictionaries(st.text(max_size=4), values, max_size=4),
    st.dictionaries(st.text(max_size=2), boundaries | st.lists(boundaries, max_size=2), max_size=2),
    st.integers(MAX_DATA_DEPTH - 2, MAX_DATA_DEPTH + 2).map(nested),
)
optional = st.one_of(
    integers,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
)


valid_topics = st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,20}", fullmatch=True)


@st.composite
def items(draw: st.DrawFn) -> Any:
    """Mostly valid events, each with at most a few defects, so that both sides of every
    rule are reached often."""
    if draw(st.integers(0, 30)) == 0:
        return draw(values)  # not an object at all
    item: dict[str, Any] = {"topic": draw(valid_topics), "data": draw(datas)}
    if draw(st.booleans()):
        item["ts"] = draw(
            st.one_of(st.sampled_from([0, -1, 2**53, 2**53 + 1]), st.integers(0, 2**53))
        )
    if draw(st.booleans()):
        item["key"] = draw(st.text(min_size=1, max_size=256))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        defect = draw(st.sampled_from(["topic", "data", "ts", "key", "drop", "extra"]))
        if defect == "drop":
            item.pop(draw(st.sampled_from(["topic", "data"])), None)
        elif defect == "extra":
            item[draw(st.sampled_from(["extra", "Topic", "id"]))] = draw(scalars)
        elif defect == "topic":
            item["topic"] = draw(topics)
        elif defect == "data":
            item["data"] = draw(values)
        else:
            item[defect] = draw(st.one_of(optional, st.text(min_size=0, max_size=300)))
    return item


def schema_accepts(body: bytes, decoded: list[Any]) -> list[dict[str, Any]] | None:
    """What the handler's reference path accepts: the schema, then the exact integers."""
    try:
        events: list[dict[str, Any]] = SCHEMA.load(decoded, many=True)
    except ValidationError:
        return None
    return None if _big_integers(body, events) else events


def check(batch: list[Any]) -> None:
    body = json.dumps(batch).encode()  # the stdlib writes big integers as literals
    decoded = orjson.loads(body)
    fast = valid_events(decoded)
    reference = schema_accepts(body, decoded)
    if fast is not None:
        assert reference is not None, f"fast accepted what the schema refuses: {batch!r}"
        assert fast == reference
    elif reference is not None:
        # The only thing the fast check leaves to the schema that it then accepts: an
        # integral float from 2**63 up (it may have been a rounded integer).
        assert _has_large_integral_float(decoded), f"fast refused a valid batch: {batch!r}"


def _has_large_integral_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_large_integral_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_large_integral_float(v) for v in value)
    return isinstance(value, float) and abs(value) >= 2.0**63 and value.is_integer()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(items(), min_size=1, max_size=3))
def test_the_fast_check_agrees_with_the_schema(batch: list[Any]) -> None:
    check(batch)


@pytest.mark.parametrize(
    "batch",
    [
        [{"topic": "metrics.cpu", "data": {"value": 1.5, "host": "a", "ok": True, "n": None}}],
        [{"topic": "a:b-c_d.e", "data": {"x": [1, {"y": 2}]}, "ts": 2**53, "key": "k" * 256}],
        [{"topic": "t", "data": {}, "ts": 0}],
        [{"topic": "t", "data": {"big": 2**64 - 1, "small": -(2**63), "f": 9.2e18}}],
        [{"topic": "t", "data": nested(MAX_DATA_DEPTH)}],
    ],
)
def test_valid_events_take_the_fast_path_unchanged(batch: list[Any]) -> None:
    decoded = orjson.loads(json.dumps(batch))
    assert valid_events(decoded) == decoded
    check(batch)


@pytest.mark.parametrize(
    "batch",
    [
        [{"topic": "T", "data": {}}],
        [{"topic": "t\n", "data": {}}],
        [{"topic": "t", "data": []}],
        [{"topic": "t", "data": {}, "ts": -1}],
        [{"topic": "t", "data": {}, "ts": 2**53 + 1}],
        [{"topic": "t", "data": {}, "ts": True}],
        [{"topic": "t", "data": {}, "ts": 1.0}],
        [{"topic": "t", "data": {}, "key": ""}],
        [{"topic": "t", "data": {}, "key": "k" * 257}],
        [{"topic": "t", "data": {}, "extra": 1}],
        [{"topic": "t", "data": {"n": 2**64}}],
        [{"topic": "t", "data": {"n": -(2**63) - 1}}],
        [{"topic": "t", "data": nested(MAX_DATA_DEPTH + 1)}],
        [{"data": {}}],
        [{"topic": "t"}],
        [{"topic": "t", "data": None}],
        ["not an object"],
    ],
)
def test_anything_invalid_goes_to_the_schema(batch: list[Any]) -> None:
    decoded = orjson.loads(json.dumps(batch))
    assert valid_events(decoded) is None
    assert schema_accepts(json.dumps(batch).encode(), decoded) is None


# -- subscribe requests -------------------------------------------------------------------

SUBSCRIBE = SubscribeSchema()
stream_ids = st.one_of(
    st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 2**65), st.integers(0, 2**65)),
    st.sampled_from(["0-0", "1-", "-1", "1-1\n", "01-1", "1_1", "1-1-1", "", "\u0661-1"]),
)
requests = st.one_of(
    st.fixed_dictionaries(
        {"topic": topics},
        optional={
            "since": st.one_of(stream_ids, integers, st.none()),
            "snapshot": st.one_of(integers, st.booleans(), st.floats(), st.none()),
            "max_rate": st.floats(0, 100),
            "from": integers,
            "presence": st.booleans(),
            "other": scalars,
        },
    ),
    values,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_plain_subscribes_are_loaded_as_the_schema_loads_them(request: Any) -> None:
    decoded = orjson.loads(json.dumps(request))  # as it arrives
    try:
        expected = SUBSCRIBE.load(decoded)
    except ValidationError:
        expected = None
    plain = plain_subscribe(decoded)
    if plain is not None:
        assert plain == expected


@pytest.mark.parametrize(
    "request_",
    [
        {"topic": "rate.1", "snapshot": 10},
        {"topic": "storm.0", "since": "1700000000000-5"},
        {"topic": "t", "since": f"{2**64 - 1}-{2**64 - 1}", "snapshot": 1000},
        {"topic": "t", "snapshot": 0},
        {"topic": "a" * 128},
    ],
)
def test_plain_subscribes_take_the_fast_path(request_: dict[str, Any]) -> None:
    assert plain_subscribe(request_) == SUBSCRIBE.load(request_)


@pytest.mark.parametrize(
    "request_",
    [
        {"topic": "t", "snapshot": 1001},
        {"topic": "t", "snapshot": True},
        {"topic": "t", "since": f"{2**64}-0"},
        {"topic": "t", "since": "1-1\n"},
        {"topic": "t", "max_rate": 5},
        {"topic": "T"},
        ["t"],
    ],
)
def test_other_subscribes_go_to_the_schema(request_: Any) -> None:
    assert plain_subscribe(request_) is None
