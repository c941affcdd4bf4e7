"""Unit and property tests: tumbling event-time windows, watermark, lateness, timer."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.pipelines.aggregates import Aggregate
from processors.pipelines.windows import ClosedWindow, TopicWindows, WindowSpec

pytestmark = pytest.mark.unit

SPEC = WindowSpec(sizes=(1000, 10_000, 60_000), lateness=1000)
FAR = 10**12

# (value, ts, ingest ms, ingest seq)
Event = tuple[float, int, int, int]


def run(
    spec: WindowSpec, events: list[Event], *, close: bool = True
) -> tuple[TopicWindows, list[ClosedWindow]]:
    windows = TopicWindows(spec)
    out: list[ClosedWindow] = []
    for value, ts, ms, seq in events:
        windows.add(value, ts, ms, seq, out)
    if close:
        windows.advance(FAR, out)
    return windows, out


def table(closed: list[ClosedWindow]) -> dict[tuple[int, int], dict[str, Any]]:
    return {(c.size, c.start): c.aggregate.summary() for c in closed}


def canonical(closed: list[ClosedWindow]) -> list[tuple[int, int, Any]]:
    return sorted((c.size, c.start, c.aggregate.to_state()) for c in closed)


def in_time(ts_values: list[tuple[float, int]], step: int = 100) -> list[Event]:
    """Events ingested in order, `step` ms apart, the ingest clock starting at ts 0."""
    return [(v, ts, i * step, 0) for i, (v, ts) in enumerate(ts_values)]


def test_known_inputs_per_window() -> None:
    events = in_time([(1.0, 100), (2.0, 900), (3.0, 1500), (4.0, 9999), (5.0, 10_000)])
    _, closed = run(SPEC, events)
    got = table(closed)
    assert set(got) == {
        (1000, 0),
        (1000, 1000),
        (1000, 9000),
        (1000, 10_000),
        (10_000, 0),
        (10_000, 10_000),
        (60_000, 0),
    }
    assert got[(1000, 0)] | {} == {
        "count": 2,
        "sum": 3.0,
        "min": 1.0,
        "max": 2.0,
        "avg": 1.5,
        "last": 2.0,
        "p50": 1.0,
        "p95": 1.0,
        "p99": 1.0,
    }
    assert got[(10_000, 0)]["count"] == 4
    assert got[(10_000, 0)]["sum"] == 10.0
    assert got[(10_000, 0)]["last"] == 4.0
    assert got[(60_000, 0)]["count"] == 5
    assert got[(60_000, 0)]["max"] == 5.0


def test_window_closes_when_the_watermark_passes_its_end() -> None:
    windows = TopicWindows(SPEC)
    out: list[ClosedWindow] = []
    windows.add(1.0, 500, 500, 0, out)
    windows.add(1.0, 1999, 1999, 0, out)  # watermark 999: [0, 1000) still open
    assert out == []
    windows.add(1.0, 2000, 2000, 0, out)  # watermark 1000 >= 1000: closes
    assert [(c.size, c.start, c.aggregate.count) for c in out] == [(1000, 0, 1)]


def test_out_of_order_within_lateness_lands_in_its_window() -> None:
    lateness = WindowSpec(sizes=(1000,), lateness=2000)
    # ts 1200, then 400 arrives 100 ms later: still within the 2 s lateness
    _, closed = run(lateness, [(1.0, 1200, 1200, 0), (7.0, 400, 1300, 0), (2.0, 2500, 2500, 0)])
    got = table(closed)
    assert got[(1000, 0)]["count"] == 1
    assert got[(1000, 0)]["sum"] == 7.0
    assert got[(1000, 1000)]["sum"] == 1.0


def test_events_beyond_lateness_are_counted_not_merged() -> None:
    windows, closed = run(SPEC, [(1.0, 5000, 5000, 0), (99.0, 3500, 5100, 0), (2.0, 4200, 5200, 0)])
    assert windows.late == 1  # 3500 is in [3000, 4000), closed once the watermark hit 4000
    got = table(closed)
    assert (1000, 3000) not in got
    assert got[(1000, 4000)]["sum"] == 2.0
    assert got[(60_000, 0)]["count"] == 2  # the late event is in no window at all


def test_timer_closes_windows_of_an_idle_topic() -> None:
    windows = TopicWindows(SPEC)
    out: list[ClosedWindow] = []
    windows.add(4.0, 10_500, 10_500, 0, out)
    windows.advance(11_000, out)  # 500 ms idle: watermark 10_000, pane end 11_000
    assert out == []
    windows.advance(12_000, out)  # 1.5 s idle: watermark 11_000
    assert [(c.size, c.start) for c in out] == [(1000, 10_000)]
    windows.advance(10_500 + 60_000, out)
    assert [(c.size, c.start) for c in out][1:] == [(10_000, 10_000), (60_000, 0)]
    assert windows.empty


def test_timer_follows_the_topics_own_clock_not_the_workers() -> None:
    """A producer whose clock is 30 s behind: its windows close `lateness` after their
    end on its own clock, not at once because the ingest clock is ahead."""
    skew = 30_000
    windows = TopicWindows(WindowSpec(sizes=(1000,), lateness=1000))
    out: list[ClosedWindow] = []
    for i in range(5):
        windows.add(1.0, 100_000 + i * 200 - skew, 100_000 + i * 200, 0, out)
    assert windows.late == 0
    windows.advance(100_800 + 500, out)
    assert out == []
    windows.advance(100_800 + 1300, out)
    assert [c.start for c in out] == [70_000]


def test_a_late_event_after_the_timer_closed_its_window_is_late() -> None:
    windows = TopicWindows(SPEC)
    out: list[ClosedWindow] = []
    windows.add(1.0, 500, 500, 0, out)
    windows.advance(5000, out)
    assert [(c.size, c.start) for c in out] == [(1000, 0)]
    assert not windows.add(2.0, 900, 5001, 0, out)
    assert windows.late == 1


def test_an_event_after_an_idle_gap_is_judged_as_if_the_timer_had_run() -> None:
    """The idle rule is applied with the event's own ingest ms, so whether the worker's
    timer happened to run before it makes no difference."""
    for timer_ran in (False, True):
        windows = TopicWindows(SPEC)
        out: list[ClosedWindow] = []
        windows.add(1.0, 10_500, 10_500, 0, out)
        if timer_ran:
            windows.advance(12_000, out)
        # 1.5 s of silence, then an event for [10_000, 11_000): lateness was 1 s
        assert not windows.add(2.0, 10_900, 12_000, 0, out)
        assert windows.late == 1
        assert [(c.size, c.start, c.aggregate.count) for c in out] == [(1000, 10_000, 1)]


def test_spec_rules() -> None:
    with pytest.raises(ValueError, match="multiple"):
        WindowSpec(sizes=(1000, 1500), lateness=0)
    with pytest.raises(ValueError, match="ascending"):
        WindowSpec(sizes=(10_000, 1000), lateness=0)
    with pytest.raises(ValueError, match="lateness"):
        WindowSpec(sizes=(1000,), lateness=-1)


def test_state_from_another_spec_is_refused() -> None:
    windows, _ = run(SPEC, in_time([(1.0, 100)]), close=False)
    state = windows.to_state()
    with pytest.raises(ValueError, match="changed"):
        TopicWindows.from_state(WindowSpec(sizes=(1000, 10_000), lateness=1000), state)


# -- properties ------------------------------------------------------------------------

burst = st.lists(
    st.tuples(st.integers(-50, 50).map(float), st.integers(0, 4_999)), min_size=1, max_size=120
)


@given(burst, st.integers(0, 2**32))
def test_order_of_arrival_within_lateness_does_not_change_closed_windows(
    pairs: list[tuple[float, int]], seed: int
) -> None:
    """All events arrive within the lateness (10 s, events spread over 5 s, ingested
    within 120 ms): any arrival order gives bit-identical closed windows."""
    spec = WindowSpec(sizes=(1000, 10_000, 60_000), lateness=10_000)
    events = [(v, ts, 50_000 + i, 0) for i, (v, ts) in enumerate(pairs)]
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    in_order, closed = run(spec, sorted(events, key=lambda e: e[1]))
    permuted, closed_permuted = run(spec, shuffled)
    assert in_order.late == permuted.late == 0
    assert canonical(closed_permuted) == canonical(closed)


stream = st.lists(
    st.tuples(
        st.integers(-100, 100).map(float),
        st.integers(0, 1500),  # gap in ingest ms to the previous entry
        st.integers(-3000, 300),  # event time relative to its ingest time
    ),
    min_size=1,
    max_size=150,
)


def to_events(items: list[tuple[float, int, int]]) -> list[Event]:
    events: list[Event] = []
    ms = 100_000
    for i, (value, gap, offset) in enumerate(items):
        ms += gap
        events.append((value, ms + offset, ms, i))
    return events


@given(stream)
def test_larger_windows_are_the_merge_of_their_panes(items: list[tuple[float, int, int]]) -> None:
    events = to_events(items)
    windows, closed = run(SPEC, events)
    by_size: dict[int, list[ClosedWindow]] = {}
    for c in closed:
        by_size.setdefault(c.size, []).append(c)
    accepted = len(events) - windows.late
    for size in SPEC.sizes:
        ends = [c.end for c in by_size.get(size, [])]
        assert ends == sorted(set(ends))  # each window once, in order
        assert sum(c.aggregate.count for c in by_size.get(size, [])) == accepted
    for big in by_size.get(10_000, []):
        merged = Aggregate()
        for pane in by_size[1000]:
            if big.start <= pane.start < big.end:
                merged.merge(pane.aggregate)
        assert merged == big.aggregate


@given(stream, st.integers(0, 2**32))
def test_timer_calls_do_not_change_what_windows_contain(
    items: list[tuple[float, int, int]], seed: int
) -> None:
    """advance(T) with T <= the next entry's ingest ms (the rule for the worker's timer)
    changes when windows close, never what they contain or which events are late."""
    events = to_events(items)
    plain, closed_plain = run(SPEC, events)
    rnd = random.Random(seed)
    ticking = TopicWindows(SPEC)
    closed_ticking: list[ClosedWindow] = []
    last_ms = 0
    for value, ts, ms, seq in events:
        if rnd.random() < 0.7:  # the timer ran, at the latest valid time or earlier
            ticking.advance(ms if rnd.random() < 0.5 else rnd.randint(last_ms, ms), closed_ticking)
        ticking.add(value, ts, ms, seq, closed_ticking)
        last_ms = ms
    ticking.advance(FAR, closed_ticking)
    assert ticking.late == plain.late
    assert canonical(closed_ticking) == canonical(closed_plain)


@given(stream, st.integers(0, 150))
def test_checkpoint_and_restore_mid_stream_changes_nothing(
    items: list[tuple[float, int, int]], cut: int
) -> None:
    """A worker killed after `cut` events: its successor restores the checkpoint and
    carries on; every window comes out as if nothing had happened."""
    events = to_events(items)
    _, closed_whole = run(SPEC, events)
    first, closed_first = run(SPEC, events[:cut], close=False)
    state = orjson.loads(orjson.dumps(first.to_state()))
    second = TopicWindows.from_state(SPEC, state)
    closed_second: list[ClosedWindow] = []
    for value, ts, ms, seq in events[cut:]:
        second.add(value, ts, ms, seq, closed_second)
    second.advance(FAR, closed_second)
    assert canonical(closed_first + closed_second) == canonical(closed_whole)
