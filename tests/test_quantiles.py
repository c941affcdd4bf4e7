"""Unit and property tests: percentiles exact while small, within 1 % above (DDSketch)."""

from __future__ import annotations

import orjson
import pytest
from ddsketch import DDSketch
from hypothesis import given
from hypothesis import strategies as st

from processors.pipelines.quantiles import ALPHA, EXACT_LIMIT, MAX_BINS, Quantiles

pytestmark = pytest.mark.unit

QS = (0.0, 0.5, 0.95, 0.99, 1.0)
TINY = 1e-300  # below this, values count as zero (absolute error)


def lower_quantile(values: list[float], q: float) -> float:
    """The reference: sorted value at index floor(q * (n - 1)) (numpy method='lower')."""
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def sketch_of(values: list[float]) -> Quantiles:
    sketch = Quantiles()
    for value in values:
        sketch.add(value)
    return sketch


def within_bound(got: float | None, want: float) -> bool:
    assert got is not None
    return abs(got - want) <= ALPHA * abs(want) * (1 + 1e-9) + TINY


magnitudes = st.floats(min_value=1e-6, max_value=1e9)
signed = st.one_of(magnitudes, magnitudes.map(lambda v: -v), st.just(0.0))
small_lists = st.lists(signed, min_size=1, max_size=EXACT_LIMIT)
large_lists = st.lists(signed, min_size=EXACT_LIMIT + 1, max_size=400)


@given(small_lists)
def test_small_windows_are_exact(values: list[float]) -> None:
    sketch = sketch_of(values)
    assert sketch.exact
    got = sketch.quantiles(QS, min(values), max(values))
    assert got == [lower_quantile(values, q) for q in QS]


@given(large_lists)
def test_large_windows_are_within_one_percent(values: list[float]) -> None:
    sketch = sketch_of(values)
    assert not sketch.exact
    got = sketch.quantiles(QS, min(values), max(values))
    for q, value in zip(QS, got, strict=True):
        assert within_bound(value, lower_quantile(values, q)), (q, value)


@given(st.lists(magnitudes, min_size=EXACT_LIMIT + 1, max_size=300))
def test_agrees_with_the_reference_ddsketch(values: list[float]) -> None:
    """Same buckets and rank rule as Datadog's DDSketch (ours is clamped to [min, max])."""
    reference = DDSketch(ALPHA)
    for value in values:
        reference.add(value)
    lo, hi = min(values), max(values)
    ours = sketch_of(values).quantiles(QS, lo, hi)
    theirs = [reference.get_quantile_value(q) for q in QS]
    for mine, ref in zip(ours, theirs, strict=True):
        assert ref is not None
        assert mine == pytest.approx(min(max(ref, lo), hi), rel=1e-12)


@given(st.lists(signed, max_size=200), st.lists(signed, max_size=200))
def test_merge_equals_adding_everything(a: list[float], b: list[float]) -> None:
    merged = sketch_of(a)
    merged.merge(sketch_of(b))
    assert merged.to_state() == sketch_of(a + b).to_state()


@given(st.lists(signed, max_size=200), st.randoms(use_true_random=False))
def test_order_does_not_matter(values: list[float], rnd: object) -> None:
    shuffled = list(values)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert sketch_of(values).to_state() == sketch_of(shuffled).to_state()


@given(st.lists(signed, max_size=300))
def test_state_round_trips_through_json(values: list[float]) -> None:
    sketch = sketch_of(values)
    state = orjson.loads(orjson.dumps(sketch.to_state()))
    restored = Quantiles.from_state(state)
    assert restored.to_state() == sketch.to_state()
    if values:
        lo, hi = min(values), max(values)
        assert restored.quantiles(QS, lo, hi) == sketch.quantiles(QS, lo, hi)


def test_empty_has_no_quantiles() -> None:
    assert Quantiles().quantiles((0.5,), 0.0, 0.0) == [None]


def test_huge_dynamic_range_stays_bounded_and_keeps_the_upper_quantiles() -> None:
    """Values from 1e-300 to 1e300 need ~70,000 buckets; the store keeps MAX_BINS and
    only the quantiles among the smallest magnitudes lose accuracy."""
    values = [10.0**e for e in range(-300, 301)] * 3 + [5.0] * 2000
    sketch = sketch_of(values)
    assert len(sketch.positive) <= MAX_BINS
    got = sketch.quantiles((0.5, 0.99, 1.0), min(values), max(values))
    for q, value in zip((0.5, 0.99, 1.0), got, strict=True):
        assert within_bound(value, lower_quantile(values, q))


def test_collapsing_is_canonical() -> None:
    """However the values are split and merged, a collapsed store is the same."""
    values = [1.01**k for k in range(0, 3 * MAX_BINS, 3)]
    whole = sketch_of(values)
    left, right = sketch_of(values[::2]), sketch_of(values[1::2])
    left.merge(right)
    assert left.to_state() == whole.to_state()
    assert len(whole.positive) == MAX_BINS


def test_extremes_do_not_overflow() -> None:
    values = [1.7e308] * 100
    assert sketch_of(values).quantiles((0.5,), 1.7e308, 1.7e308) == [1.7e308]
    tiny = [5e-324] * 100
    assert sketch_of(tiny).quantiles((0.5,), 5e-324, 5e-324) == [5e-324]


def test_malformed_state_is_refused() -> None:
    with pytest.raises(ValueError, match="odd-length"):
        Quantiles.from_state([0, [1], []])
    with pytest.raises(ValueError, match="positive"):
        Quantiles.from_state([0, [1, 0], []])
    with pytest.raises(ValueError, match="too many"):
        Quantiles.from_state([[1.0] * (EXACT_LIMIT + 1)])


everywhere = st.floats(min_value=0, allow_nan=False, allow_infinity=False, allow_subnormal=True)


@given(st.lists(st.one_of(everywhere, everywhere.map(lambda v: -v)), max_size=300))
def test_the_inlined_bucket_keys_are_the_mappings(values: list[float]) -> None:
    """A pane's values merged into a sketch at once (`_sketch_add_all`) land in the
    buckets the DDSketch mapping gives each value on its own."""
    merged = Quantiles()
    merged.values = None
    merged._sketch_add_all(values)
    one_by_one = Quantiles()
    one_by_one.values = None
    for value in values:
        one_by_one._sketch_add(value, 1)
    assert merged.to_state() == one_by_one.to_state()
