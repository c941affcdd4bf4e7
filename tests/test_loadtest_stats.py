"""Percentiles and the latency histogram of the load generator."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.loadtest.stats import Histogram, median, percentile

pytestmark = pytest.mark.unit


def test_nearest_rank_percentile() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(values, 50) == 5.0
    assert percentile(values, 99) == 10.0
    assert percentile(values, 0) == 1.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile(values, 101)


def test_median_skips_nan() -> None:
    assert median([3.0, 1.0, math.nan, 2.0]) == 2.0
    assert median([4.0, 1.0]) == 2.5
    assert math.isnan(median([]))


@given(st.lists(st.floats(min_value=0.01, max_value=60_000), min_size=1, max_size=300))
def test_histogram_percentiles_are_within_one_percent(values: list[float]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    exact = sorted(values)
    for q in (50, 95, 99, 100):
        assert histogram.percentile(q) == pytest.approx(percentile(exact, q), rel=0.01)
    assert histogram.count == len(values)
    assert histogram.max == max(values)


def test_histogram_merge_empty_and_negative_values() -> None:
    a, b = Histogram(), Histogram()
    assert a.summary() == {"p50": None, "p95": None, "p99": None, "max": None}
    a.record(-3.0)  # clock skew: counted, at the floor
    b.record(10.0)
    a.merge(b)
    assert a.count == 2
    assert a.percentile(100) == pytest.approx(10.0, rel=0.01)
    assert a.percentile(50) < 0.01
