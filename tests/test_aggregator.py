"""Unit and property tests: a partition's aggregator, its output ids and checkpoints."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.pipelines.config import build, default_pipelines
from processors.pipelines.partition_windows import (
    EVICT_AFTER_MS,
    OFFSET_FIELD,
    ROUTED_FIELD,
    Aggregator,
    state_field,
)
from processors.pipelines.plan import Pipelines
from processors.pipelines.transform import IngestEvent, TopicEvent
from realtime.core.streamids import parse_id

pytestmark = pytest.mark.unit

PIPELINES = Pipelines(default_pipelines())
FAR = 10**15


def process(aggregator: Aggregator, events: list[IngestEvent]) -> list[TopicEvent]:
    """What the worker does per entry: plan, then feed the windows."""
    out: list[TopicEvent] = []
    for e in events:
        for feed in aggregator.pipelines.plan(e).feeds:
            out.extend(aggregator.feed(feed, e))
    return out


def entry(ms: int, topic: str, value: float, ts: int | None = None, seq: int = 0) -> IngestEvent:
    return IngestEvent(
        id=f"{ms}-{seq}", topic=topic, ts=ms if ts is None else ts, data={"value": value}
    )


def by_topic(events: list[TopicEvent]) -> dict[str, list[TopicEvent]]:
    grouped: dict[str, list[TopicEvent]] = {}
    for e in events:
        grouped.setdefault(e.topic, []).append(e)
    return grouped


def test_outputs_carry_window_end_ids_and_the_documented_data() -> None:
    aggregator = Aggregator(PIPELINES)
    out = process(
        aggregator,
        [entry(1_700_000_000_100, "metrics.cpu", 2), entry(1_700_000_000_900, "metrics.cpu", 4)],
    )
    assert out == []
    out = aggregator.advance(1_700_000_000_900 + 2000)
    (event,) = out
    assert event.topic == "metrics.cpu:1s"
    assert event.id == "1700000001000-0"
    assert event.ts == 1_700_000_000_000
    assert event.data == {
        "window_start": 1_700_000_000_000,
        "window_end": 1_700_000_001_000,
        "count": 2,
        "sum": 6.0,
        "min": 2.0,
        "max": 4.0,
        "avg": 3.0,
        "last": 4.0,
        "p50": 2.0,
        "p95": 2.0,
        "p99": 2.0,
    }


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["metrics.a", "metrics.b"]), st.integers(0, 700), st.integers(-1500, 0)
        ),
        max_size=120,
    )
)
def test_ids_increase_per_output_topic(items: list[tuple[str, int, int]]) -> None:
    aggregator = Aggregator(PIPELINES)
    out: list[TopicEvent] = []
    ms = 1_000_000
    for topic, gap, offset in items:
        ms += gap
        out += process(aggregator, [entry(ms, topic, 1.0, ts=ms + offset)])
    out += aggregator.advance(FAR)
    for topic, events in by_topic(out).items():
        ids = [parse_id(e.id) for e in events]
        assert ids == sorted(set(ids)), topic


def test_late_events_are_counted_per_pipeline() -> None:
    aggregator = Aggregator(PIPELINES)
    process(aggregator, [entry(10_000, "metrics.cpu", 1), entry(10_001, "metrics.cpu", 1, ts=5000)])
    assert aggregator.drain_late() == {"metrics": 1}
    assert aggregator.drain_late() == {}


def test_checkpoint_writes_only_what_changed() -> None:
    aggregator = Aggregator(PIPELINES)
    process(aggregator, [entry(1000, "metrics.a", 1), entry(1001, "metrics.b", 1)])
    first = aggregator.checkpoint("1001-0")
    assert set(first.fields) == {OFFSET_FIELD, "metrics|metrics.a", "metrics|metrics.b"}
    assert first.fields[OFFSET_FIELD] == b"1001-0"
    process(aggregator, [entry(1002, "metrics.a", 1)])
    second = aggregator.checkpoint("1002-0")
    assert set(second.fields) == {OFFSET_FIELD, "metrics|metrics.a"}
    assert second.removed == []


def test_idle_topics_are_evicted_and_deleted_from_the_checkpoint() -> None:
    aggregator = Aggregator(PIPELINES)
    process(aggregator, [entry(1000, "metrics.a", 1)])
    aggregator.checkpoint("1000-0")
    aggregator.advance(1000 + 120_000)  # every window closed, but not idle for long
    assert len(aggregator) == 1
    aggregator.advance(1000 + EVICT_AFTER_MS)
    assert len(aggregator) == 0
    checkpoint = aggregator.checkpoint("1000-0")
    assert checkpoint.removed == ["metrics|metrics.a"]
    assert set(checkpoint.fields) == {OFFSET_FIELD}


def test_restore_drops_state_that_no_longer_fits_the_pipelines() -> None:
    aggregator = Aggregator(PIPELINES)
    process(aggregator, [entry(1000, "metrics.a", 1)])
    fields: dict[bytes | str, bytes | str] = dict(aggregator.checkpoint("1000-0").fields)
    fields[ROUTED_FIELD] = b"1000-0"
    fields[state_field("gone", "metrics.a")] = b"{}"
    fields[state_field("metrics", "metrics.b")] = b"not json"
    changed = Pipelines(
        build(
            {
                "pipelines": [
                    {"name": "metrics", "match": "metrics.*", "windows": {"sizes": ["1s"]}}
                ]
            },
            "t",
        )
    )
    restored = Aggregator(changed).restore(fields)
    assert restored.offset == "1000-0"
    assert restored.routed == "1000-0"
    assert restored.restored == 0
    discarded = dict(restored.discarded)
    assert discarded.pop("gone|metrics.a") == "pipeline no longer aggregates this topic"
    assert discarded.pop("metrics|metrics.a") == (
        "unusable state: window sizes or lateness changed since the checkpoint"
    )
    assert discarded.pop("metrics|metrics.b").startswith("unusable state: ")
    assert discarded == {}
    same = Aggregator(PIPELINES)
    report = same.restore(fields)
    assert report.restored == 1
    assert same.checkpoint("x").removed  # the discarded fields get deleted


stream = st.lists(
    st.tuples(
        st.sampled_from(["metrics.a", "metrics.b", "metrics.c"]),
        st.integers(-1000, 1000).map(float),
        st.integers(0, 900),  # ingest gap (ms)
        st.integers(-2500, 100),  # event time relative to ingest time
    ),
    min_size=1,
    max_size=150,
)


def to_entries(items: list[tuple[str, float, int, int]]) -> list[IngestEvent]:
    entries = []
    ms = 1_700_000_000_000
    for i, (topic, value, gap, offset) in enumerate(items):
        ms += gap
        entries.append(entry(ms, topic, value, ts=ms + offset, seq=i))
    return entries


@given(stream, st.data())
def test_worker_killed_mid_window_loses_and_double_counts_nothing(
    items: list[tuple[str, float, int, int]], data: st.DataObject
) -> None:
    """The old owner checkpoints after entry k, processes more (emitting some windows)
    and dies at entry c; the new owner restores the checkpoint and replays everything
    after the offset. Every window topic ends with exactly the uninterrupted run's
    events: same ids, same data (a repeated id has identical data, so history's
    duplicate refusal is harmless)."""
    entries = to_entries(items)
    whole = Aggregator(PIPELINES)
    expected = process(whole, entries) + whole.advance(FAR)

    k = data.draw(st.integers(0, len(entries)), label="checkpoint after")
    c = data.draw(st.integers(k, len(entries)), label="killed at")
    ticks = data.draw(st.lists(st.booleans(), min_size=c + 1, max_size=c + 1), label="timer")
    old = Aggregator(PIPELINES)
    written: list[TopicEvent] = []
    checkpoint = old.checkpoint("0-0")
    for i in range(c + 1):
        if ticks[i] and i < len(entries):  # the timer, with the next entry's ingest ms
            written += old.advance(parse_id(entries[i].id)[0])
        if i == k:
            checkpoint = old.checkpoint(entries[k - 1].id if k else "0-0")
        if i < c:  # processed and published; after k never checkpointed
            written += process(old, [entries[i]])

    stored = {name: value for name, value in checkpoint.fields.items()}
    new = Aggregator(PIPELINES)
    restored = new.restore(orjson.loads(orjson.dumps({n: v.decode() for n, v in stored.items()})))
    assert restored.offset == checkpoint.fields[OFFSET_FIELD].decode()
    offset = parse_id(restored.offset)
    replay = [e for e in entries if parse_id(e.id) > offset]
    written += process(new, replay) + new.advance(FAR)

    history: dict[tuple[str, str], dict[str, Any]] = {}
    for e in written:
        first = history.setdefault((e.topic, e.id), e.data)
        assert first == e.data, "a window was emitted twice with different contents"
    assert history == {(e.topic, e.id): e.data for e in expected}
