"""Unit and property tests: a max_rate subscription merges, never drops."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.delivery.conflate import Conflater

pytestmark = pytest.mark.unit


def ev(ms: int, value: Any, seq: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "topic": "metrics.cpu",
        "id": f"{ms}-{seq}",
        "ts": ms,
        "data": {"value": value, **extra},
    }


def test_first_event_goes_out_at_once_as_a_merge_of_one() -> None:
    conflater = Conflater("metrics.cpu", max_rate=2)
    (sent,) = conflater.offer(ev(1000, 5), now=10.0)
    assert sent == {
        "topic": "metrics.cpu",
        "id": "1000-0",
        "ts": 1000,
        "data": {
            "count": 1,
            "first_id": "1000-0",
            "first_ts": 1000,
            "values": 1,
            "sum": 5.0,
            "min": 5.0,
            "max": 5.0,
            "last": 5.0,
            "latest": {"value": 5},
        },
    }


def test_events_within_the_interval_are_merged_into_the_next_packet() -> None:
    conflater = Conflater("metrics.cpu", max_rate=2)  # one packet per 0.5 s
    conflater.offer(ev(1000, 1), now=10.0)
    assert conflater.offer(ev(1100, 4, host="a"), now=10.1) == []
    assert conflater.offer(ev(1200, "n/a"), now=10.2) == []
    assert conflater.offer(ev(1300, -2, host="b"), now=10.3) == []
    assert conflater.pending == 3
    assert conflater.due() == 10.5
    assert conflater.flush(10.4) == []
    (sent,) = conflater.flush(10.5)
    assert sent["id"] == "1300-0"
    assert sent["ts"] == 1300
    assert sent["data"] == {
        "count": 3,
        "first_id": "1100-0",
        "first_ts": 1100,
        "values": 2,
        "sum": 2.0,
        "min": -2.0,
        "max": 4.0,
        "last": -2.0,
        "latest": {"value": -2, "host": "b"},
    }
    assert conflater.due() is None
    assert conflater.pending == 0


def test_events_without_numbers_still_count() -> None:
    conflater = Conflater("orders", max_rate=1)
    (sent,) = conflater.offer({"topic": "orders", "id": "1-0", "ts": 1, "data": {"sku": "x"}}, 0.0)
    assert sent["data"]["count"] == 1
    assert sent["data"]["values"] == 0
    assert sent["data"]["sum"] is None
    assert sent["data"]["last"] is None


def test_nested_field() -> None:
    conflater = Conflater("t", max_rate=1, field="cpu.user")
    (sent,) = conflater.offer(
        {"topic": "t", "id": "1-0", "ts": 1, "data": {"cpu": {"user": 3}}}, 0.0
    )
    assert sent["data"]["sum"] == 3.0


def test_repeated_ids_are_ignored() -> None:
    conflater = Conflater("metrics.cpu", max_rate=1)
    conflater.offer(ev(1000, 1), now=0.0)
    assert conflater.offer(ev(1000, 1), now=5.0) == []
    assert conflater.offer(ev(999, 1, seq=7), now=5.0) == []
    assert conflater.pending == 0


@pytest.mark.parametrize("rate", [0, -1, 0.001, 1000, math.nan])
def test_rate_bounds(rate: float) -> None:
    with pytest.raises(ValueError, match="max_rate"):
        Conflater("t", max_rate=rate)


@given(
    st.floats(min_value=0.5, max_value=50),
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=0.3),  # time to the next event (s)
            st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6), st.none()),
            st.booleans(),  # did the timer fire before this event?
        ),
        max_size=200,
    ),
)
def test_merging_never_loses_an_event_and_respects_the_rate(
    rate: float, items: list[tuple[float, int | float | None, bool]]
) -> None:
    conflater = Conflater("metrics.cpu", max_rate=rate)
    now = 100.0
    sent: list[tuple[float, dict[str, Any]]] = []
    values: list[float] = []
    for i, (delay, value, timer_fired) in enumerate(items):
        now += delay
        if timer_fired:
            due = conflater.due()
            if due is not None and due <= now:
                sent += [(due, e) for e in conflater.flush(due)]
        sent += [(now, e) for e in conflater.offer(ev(1000 + i, value), now)]
        if value is not None:
            values.append(float(value))
    due = conflater.due()
    if due is not None:
        sent += [(max(due, now), e) for e in conflater.flush(max(due, now))]

    assert conflater.pending == 0
    assert sum(e["data"]["count"] for _, e in sent) == len(items)  # nothing dropped
    assert sum(e["data"]["values"] for _, e in sent) == len(values)
    assert sum(e["data"]["sum"] or 0.0 for _, e in sent) == pytest.approx(
        math.fsum(values), abs=1e-3
    )
    times = [t for t, _ in sent]
    interval = 1.0 / rate
    assert all(b - a >= interval - 1e-9 for a, b in itertools.pairwise(times))
    for start in times:  # packets in any span of T seconds: at most max_rate * T + 1
        for span in (1.0, 5.0):
            in_span = sum(1 for t in times if start <= t < start + span)
            assert in_span <= math.floor(rate * span + 1e-9) + 1
    ids = [tuple(map(int, e["id"].split("-"))) for _, e in sent]
    assert ids == sorted(set(ids))
    # each packet covers exactly the events after the previous one, up to its id
    covered = 0
    for _, e in sent:
        assert e["data"]["first_id"] == f"{1000 + covered}-0"
        covered += e["data"]["count"]
        assert e["id"] == f"{1000 + covered - 1}-0"
