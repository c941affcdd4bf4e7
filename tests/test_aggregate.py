"""Unit and property tests: window aggregates are exact, mergeable and serialisable."""

from __future__ import annotations

import math
import random

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.pipelines.aggregates import Aggregate, numeric
from processors.pipelines.quantiles import EXACT_LIMIT

pytestmark = pytest.mark.unit

# (value, ts, ingest ms, ingest seq); ids are unique per event, as in a stream.
Event = tuple[float, int, int, int]

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
any_finite = st.floats(allow_nan=False, allow_infinity=False)


def events_strategy(
    values: st.SearchStrategy[float] = finite, max_size: int = 150
) -> st.SearchStrategy[list[Event]]:
    def with_ids(pairs: list[tuple[float, int]]) -> list[Event]:
        return [(value, ts, 1000 + i, i % 3) for i, (value, ts) in enumerate(pairs)]

    return st.lists(st.tuples(values, st.integers(0, 50)), max_size=max_size).map(with_ids)


def aggregate_of(events: list[Event]) -> Aggregate:
    aggregate = Aggregate()
    for value, ts, ms, seq in events:
        aggregate.add(numeric(value) or 0.0, ts, ms, seq)
    return aggregate


def test_known_inputs_give_exact_statistics() -> None:
    events = [(3.0, 10, 1, 0), (1.5, 30, 2, 0), (-2.0, 20, 3, 0), (7.25, 30, 1, 5)]
    summary = aggregate_of(events).summary()
    assert summary == {
        "count": 4,
        "sum": 9.75,
        "min": -2.0,
        "max": 7.25,
        "avg": 2.4375,
        # two events share the latest ts 30: the one with the greater ingest id wins
        "last": 1.5,
        "p50": 1.5,  # sorted -2, 1.5, 3, 7.25: index floor(0.5 * 3) = 1
        "p95": 3.0,  # floor(0.95 * 3) = 2
        "p99": 3.0,
    }


def test_empty_summary_has_nulls() -> None:
    summary = Aggregate().summary()
    assert summary["count"] == 0
    assert all(summary[k] is None for k in ("sum", "min", "max", "avg", "last", "p50"))


def test_sum_is_exact_where_naive_float_addition_is_not() -> None:
    values = [0.1] * 10 + [1e16, 1.0, -1e16]
    aggregate = aggregate_of([(v, 0, i, 0) for i, v in enumerate(values)])
    assert sum(values) != math.fsum(values)  # the trap this avoids
    assert aggregate.sum == math.fsum(values)


@given(events_strategy(any_finite))
def test_sum_is_the_correctly_rounded_exact_sum(events: list[Event]) -> None:
    total = aggregate_of(events).sum
    try:
        expected = math.fsum(v for v, *_ in events)
    except OverflowError:  # fsum gives up where the exact sum exceeds the float range
        assert math.isinf(total)
        return
    assert total == expected or (math.isinf(total) and math.isinf(expected))


@given(events_strategy(), events_strategy())
def test_merge_equals_the_aggregate_of_the_concatenation(a: list[Event], b: list[Event]) -> None:
    b = [(v, ts, ms + 10_000, seq) for v, ts, ms, seq in b]  # distinct ids
    merged = aggregate_of(a)
    merged.merge(aggregate_of(b))
    whole = aggregate_of(a + b)
    assert merged == whole
    assert merged.summary() == whole.summary()


@given(events_strategy(max_size=EXACT_LIMIT * 3), st.integers(0, 2**32))
def test_arrival_order_does_not_change_the_aggregate(events: list[Event], seed: int) -> None:
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    assert aggregate_of(shuffled) == aggregate_of(events)
    assert aggregate_of(shuffled).summary() == aggregate_of(events).summary()


@given(events_strategy(any_finite, max_size=EXACT_LIMIT * 2))
def test_state_round_trips_through_json(events: list[Event]) -> None:
    aggregate = aggregate_of(events)
    restored = Aggregate.from_state(orjson.loads(orjson.dumps(aggregate.to_state())))
    assert restored == aggregate
    assert restored.summary() == aggregate.summary() or math.isinf(aggregate.sum)
    # and it keeps working after restore, like the original
    restored.add(1.0, 99, 99_999, 0)
    aggregate.add(1.0, 99, 99_999, 0)
    assert restored == aggregate


def test_big_exact_sums_serialise_as_strings() -> None:
    aggregate = aggregate_of([(1e300, 0, 1, 0), (5e-324, 0, 2, 0)])
    state = aggregate.to_state()
    assert isinstance(state[1], str)
    assert Aggregate.from_state(orjson.loads(orjson.dumps(state))) == aggregate


def test_state_is_compact_for_a_busy_window() -> None:
    """10,000 values between 1 and 1,000 (a busy 1m window) checkpoint in a few KB."""
    rnd = random.Random(7)
    aggregate = aggregate_of([(rnd.uniform(1, 1000), i, i, 0) for i in range(10_000)])
    assert len(orjson.dumps(aggregate.to_state())) < 4096


def test_negative_zero_does_not_make_min_order_dependent() -> None:
    a = aggregate_of([(-0.0, 0, 1, 0), (0.0, 0, 2, 0)])
    b = aggregate_of([(0.0, 0, 2, 0), (-0.0, 0, 1, 0)])
    assert a == b
    assert math.copysign(1.0, a.min) == 1.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1, 1.0),
        (2.5, 2.5),
        (-0.0, 0.0),
        (2**63, float(2**63)),
        (True, None),
        ("3", None),
        (None, None),
        (math.nan, None),
        (math.inf, None),
        ([1], None),
        (10**400, None),
    ],
)
def test_numeric_accepts_json_numbers_only(raw: object, expected: float | None) -> None:
    assert numeric(raw) == expected


def test_overflowing_sum_still_gives_a_finite_mean() -> None:
    aggregate = aggregate_of([(1.5e308, 0, 1, 0), (1.5e308, 0, 2, 0)])
    summary = aggregate.summary()
    assert math.isinf(summary["sum"])
    assert summary["avg"] == 1.5e308
    assert orjson.loads(orjson.dumps(summary))["sum"] is None  # JSON has no infinity
