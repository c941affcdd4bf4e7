"""Unit tests: what one ingest event produces under the pipelines (`Pipelines.plan`)."""

from __future__ import annotations

from typing import Any

import pytest

from processors.pipelines.config import build, default_pipelines
from processors.pipelines.plan import (
    DERIVED_TOPIC,
    FILTERED,
    HOP_LIMIT,
    MAX_HOPS,
    NOT_NUMERIC,
    OUTPUT_CONFLICT,
    SELF_ROUTE,
    Pipelines,
    Plan,
    hops_of,
)
from processors.pipelines.routing import INVALID_TOPIC, MISSING_KEY
from processors.pipelines.transform import IngestEvent, TopicEvent, decode_entry

pytestmark = pytest.mark.unit


def event(
    topic: str, data: dict[str, Any], id: str = "1700000000000-0", ts: int = 5
) -> IngestEvent:
    return IngestEvent(id=id, topic=topic, ts=ts, data=data)


def pipelines(*items: dict[str, Any]) -> Pipelines:
    return Pipelines(build({"pipelines": list(items)}, "test"))


def reasons(plan: Plan) -> list[tuple[str, str]]:
    return [(s.pipeline, s.reason) for s in plan.skipped]


DEFAULT = Pipelines(default_pipelines())


def test_default_metrics_topic_passes_through_and_feeds_three_windows() -> None:
    e = event("metrics.cpu", {"value": 41.5, "host": "a"})
    plan = DEFAULT.plan(e)
    assert plan.passthrough == TopicEvent("metrics.cpu", e.id, e.ts, e.data)
    (feed,) = plan.feeds
    assert feed.pipeline == "metrics"
    assert feed.value == 41.5
    assert feed.outputs == ("metrics.cpu:1s", "metrics.cpu:10s", "metrics.cpu:1m")
    assert feed.spec.sizes == (1000, 10_000, 60_000)
    assert plan.routed == []
    assert plan.skipped == []


def test_default_other_topics_only_pass_through() -> None:
    plan = DEFAULT.plan(event("events.orders", {"value": 1}))
    assert plan.passthrough is not None
    assert plan.feeds == []
    assert plan.routed == []
    assert plan.skipped == []


@pytest.mark.parametrize("data", [{}, {"value": "12"}, {"value": True}, {"value": None}])
def test_metrics_without_a_numeric_value_pass_through_only(data: dict[str, Any]) -> None:
    plan = DEFAULT.plan(event("metrics.cpu", data))
    assert plan.passthrough is not None
    assert plan.feeds == []
    assert reasons(plan) == [("metrics", NOT_NUMERIC)]


def test_window_outputs_are_refused_as_input() -> None:
    plan = DEFAULT.plan(event("metrics.cpu:1s", {"value": 1}))
    assert plan.passthrough is None
    assert plan.feeds == []
    assert reasons(plan) == [("metrics", DERIVED_TOPIC)]
    assert DEFAULT.derived_from("metrics.cpu:1s") == "metrics"
    assert DEFAULT.derived_from("metrics.cpu:2s") is None
    assert DEFAULT.derived_from("other.cpu:1s") is None
    assert DEFAULT.derived_from("metrics.cpu") is None


def test_nested_field_and_custom_output_topic() -> None:
    p = pipelines(
        {
            "name": "lat",
            "match": "http.*",
            "windows": {
                "field": "latency.ms",
                "sizes": ["10s"],
                "topic": "{topic}.latency:{window}",
            },
        }
    )
    (feed,) = p.plan(event("http.api", {"latency": {"ms": 12}})).feeds
    assert feed.value == 12.0
    assert feed.outputs == ("http.api.latency:10s",)
    assert p.derived_from("http.api.latency:10s") == "lat"


def test_drop_if_drops_the_event_from_everything() -> None:
    p = pipelines(
        {"name": "w", "match": "metrics.*", "windows": {"sizes": ["1s"]}},
        {"name": "clean", "match": "*", "drop_if": "test == true"},
    )
    dropped = p.plan(event("metrics.cpu", {"value": 1, "test": True}))
    assert dropped.passthrough is None
    assert dropped.feeds == []
    assert dropped.routed == []
    assert reasons(dropped) == [("clean", FILTERED)]
    kept = p.plan(event("metrics.cpu", {"value": 1, "test": False}))
    assert kept.passthrough is not None
    assert len(kept.feeds) == 1


def test_rename_vetoes_pass_through() -> None:
    p = pipelines(
        {
            "name": "rename",
            "match": "legacy.cpu",
            "passthrough": False,
            "routes": [{"to": "metrics.cpu"}],
        },
        {"name": "all", "match": "*"},
    )
    plan = p.plan(event("legacy.cpu", {"value": 3}))
    assert plan.passthrough is None
    assert [(r.topic, r.data, r.hops, r.ts) for r in plan.routed] == [
        ("metrics.cpu", {"value": 3}, 1, 5)
    ]


def test_group_by_routes_into_per_key_topics() -> None:
    p = pipelines(
        {
            "name": "by-region",
            "match": "orders",
            "routes": [
                {"to": "orders.by_region.{region}"},
                {"to": "orders.big", "when": "amount >= 100"},
            ],
        }
    )
    plan = p.plan(event("orders", {"region": "EU", "amount": 150}))
    assert plan.passthrough is not None
    assert [r.topic for r in plan.routed] == ["orders.by_region.eu", "orders.big"]
    small = p.plan(event("orders", {"region": "us", "amount": 5}))
    assert [r.topic for r in small.routed] == ["orders.by_region.us"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [({}, MISSING_KEY), ({"region": "eu west"}, INVALID_TOPIC), ({"region": ["x"]}, MISSING_KEY)],
)
def test_keys_that_make_no_topic_are_skipped_with_a_reason(
    data: dict[str, Any], reason: str
) -> None:
    p = pipelines({"name": "g", "match": "orders", "routes": [{"to": "orders.by_region.{region}"}]})
    plan = p.plan(event("orders", data))
    assert plan.routed == []
    assert reasons(plan) == [("g", reason)]
    assert plan.passthrough is not None  # the event itself is not lost


def test_fallback_catches_keys_that_make_no_topic() -> None:
    p = pipelines(
        {
            "name": "g",
            "match": "orders",
            "routes": [{"to": "orders.by_region.{region}", "fallback": "orders.by_region.unknown"}],
        }
    )
    plan = p.plan(event("orders", {"region": "eu west"}))
    assert [r.topic for r in plan.routed] == ["orders.by_region.unknown"]
    assert plan.skipped == []


def test_routes_never_target_window_outputs_or_their_own_topic() -> None:
    p = pipelines(
        {"name": "m", "match": "metrics.*", "windows": {"sizes": ["1s"]}},
        {"name": "r", "match": "src.*", "routes": [{"to": "metrics.{name}:1s"}, {"to": "{topic}"}]},
    )
    plan = p.plan(event("src.a", {"name": "cpu"}))
    assert plan.routed == []
    assert reasons(plan) == [("r", DERIVED_TOPIC), ("r", SELF_ROUTE)]


def test_routing_loops_stop_at_the_hop_limit() -> None:
    p = pipelines({"name": "loop", "match": "a.*", "routes": [{"to": "a.{n}"}]})
    e = event("a.1", {"n": 2})
    assert [r.hops for r in p.plan(e, hops=0).routed] == [1]
    assert [r.hops for r in p.plan(e, hops=MAX_HOPS - 1).routed] == [MAX_HOPS]
    stopped = p.plan(e, hops=MAX_HOPS)
    assert stopped.routed == []
    assert reasons(stopped) == [("loop", HOP_LIMIT)]


def test_routed_copy_is_an_ingest_entry_the_worker_decodes() -> None:
    p = pipelines({"name": "c", "match": "a", "routes": [{"to": "b.{k}"}]})
    (routed,) = p.plan(event("a", {"k": "x", "v": [1, {"y": None}]}, ts=42)).routed
    fields = routed.ingest_fields()
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    decoded = decode_entry("9-0", raw)
    assert (decoded.topic, decoded.ts, decoded.data) == (
        "b.x",
        42,
        {"k": "x", "v": [1, {"y": None}]},
    )
    assert hops_of(raw) == 1
    assert hops_of({"topic": "a"}) == 0
    assert hops_of({"hops": "junk"}) == 0


def test_two_pipelines_making_the_same_window_topic_first_wins() -> None:
    p = pipelines(
        {"name": "first", "match": "metrics.*", "windows": {"sizes": ["1s"]}},
        {"name": "second", "match": "metrics.cpu", "windows": {"sizes": ["1s"], "field": "v"}},
    )
    plan = p.plan(event("metrics.cpu", {"value": 1, "v": 2}))
    assert [f.pipeline for f in plan.feeds] == ["first"]
    assert reasons(plan) == [("second", OUTPUT_CONFLICT)]


def test_window_outputs_for_restore() -> None:
    assert DEFAULT.window_outputs("metrics", "metrics.cpu") == (
        "metrics.cpu:1s",
        "metrics.cpu:10s",
        "metrics.cpu:1m",
    )
    assert DEFAULT.window_outputs("metrics", "events.x") is None
    assert DEFAULT.window_outputs("gone", "metrics.cpu") is None


def test_an_output_name_past_the_length_limit_is_skipped() -> None:
    topic = "metrics." + "x" * 118  # 126 characters: valid; with ":10s" it is not
    plan = DEFAULT.plan(event(topic, {"value": 1}))
    assert plan.passthrough is not None
    assert plan.feeds == []
    assert reasons(plan) == [("metrics", "invalid_output_topic")]
