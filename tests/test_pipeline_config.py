"""Unit tests: the pipelines file is validated with every problem named by its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from processors.pipelines.config import (
    PipelinesError,
    build,
    default_pipelines,
    describe,
    duration_label,
    load_pipelines,
    parse_duration,
)

pytestmark = pytest.mark.unit

EXAMPLE_YAML = """
pipelines:
  - name: metrics
    match: "metrics.*"
    windows:
      sizes: [1m, 1s, 10s]
      lateness: 2s
  - name: orders
    match: ["orders.*", "shop.orders"]
    drop_if: {any: ["amount < 0", "test == true"]}
    routes:
      - to: "orders.by_region.{region}"
        fallback: orders.by_region.unknown
      - to: orders.big
        when: "amount >= 1000"
  - name: legacy
    match: legacy.cpu
    passthrough: off
    routes: [{to: metrics.cpu}]
"""


def problems(raw: Any) -> list[str]:
    with pytest.raises(PipelinesError) as info:
        build(raw, "test.yaml")
    return info.value.problems


def one(pipeline: dict[str, Any]) -> dict[str, Any]:
    return {"pipelines": [{"name": "p", "match": "t.*", **pipeline}]}


def test_default_is_metrics_with_three_windows() -> None:
    config = default_pipelines()
    (metrics,) = config.pipelines
    assert metrics.match == ("metrics.*",)
    assert metrics.passthrough
    assert metrics.windows is not None
    assert metrics.windows.labels == ("1s", "10s", "1m")
    assert metrics.windows.spec.sizes == (1000, 10_000, 60_000)
    assert metrics.windows.field == ("value",)
    assert metrics.windows.output("metrics.cpu", "1s") == "metrics.cpu:1s"
    assert load_pipelines("") == config
    assert load_pipelines(None) == config


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(EXAMPLE_YAML)
    config = load_pipelines(str(path))
    assert [p.name for p in config.pipelines] == ["metrics", "orders", "legacy"]
    metrics, orders, legacy = config.pipelines
    assert metrics.windows is not None
    assert metrics.windows.spec.sizes == (1000, 10_000, 60_000)  # sorted
    assert metrics.windows.spec.lateness == 2000
    assert orders.matches("shop.orders")
    assert orders.matches("orders.eu")
    assert not orders.matches("shop.orders.x")
    assert orders.drop_if is not None
    assert orders.drop_if({"amount": -1})
    assert orders.routes[0].fallback == "orders.by_region.unknown"
    assert orders.routes[1].when is not None
    assert orders.routes[1].when({"amount": 1000})
    assert not legacy.passthrough
    text = describe(config)
    assert "orders: match orders.*, shop.orders" in text
    assert "route -> orders.by_region.{region} (fallback orders.by_region.unknown)" in text


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.json"
    path.write_text('{"pipelines": [{"name": "a", "match": "a.*", "passthrough": false}]}')
    (a,) = load_pipelines(str(path)).pipelines
    assert not a.passthrough


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, "pipelines: Missing data for required field."),
        ({"pipelines": [], "extra": 1}, "extra: Unknown field."),
        ({"pipelines": [], "version": 2}, "version: Must be equal to 1."),
        ({"pipelines": [{"match": "a"}]}, "pipelines[0].name: Missing data"),
        (
            {"pipelines": [{"name": "Bad Name", "match": "a"}]},
            "pipelines[0] (Bad Name).name: lowercase",
        ),
        (one({"name": "p\n"}), ".name: lowercase"),
        (one({"windows": {"sizes": ["\u0661s"]}}), "not a duration"),
        (one({"windows": {"sizes": ["1s"], "field": "value\n"}}), ".windows.field:"),
        (one({"match": "A.*"}), "pipelines[0] (p).match: 'A.*' is not a topic glob"),
        (one({"match": []}), "pipelines[0] (p).match: a glob such as"),
        (one({"passthrough": "maybe"}), "pipelines[0] (p).passthrough: Not a valid boolean."),
        (one({"drop_if": "value <"}), "pipelines[0] (p).drop_if: cannot parse 'value <'"),
        (one({"windows": {}}), "pipelines[0] (p).windows.sizes: Missing data"),
        (
            one({"windows": {"sizes": ["1s", "10x"]}}),
            "pipelines[0] (p).windows.sizes[1]: not a duration: '10x'",
        ),
        (
            one({"windows": {"sizes": ["1s", "1500ms"]}}),
            "windows.sizes: every size must be a multiple of the smallest (1s)",
        ),
        (one({"windows": {"sizes": ["1s", "1000ms"]}}), "windows.sizes: sizes must be distinct"),
        (one({"windows": {"sizes": ["10ms"]}}), "windows.sizes: 10ms is outside 100ms..1d"),
        (one({"windows": {"sizes": ["2d"]}}), "windows.sizes: 2d is outside"),
        (one({"windows": {"sizes": ["1s"] * 7}}), "windows.sizes: Length must be between 1 and 6."),
        (one({"windows": {"sizes": ["1s"], "lateness": 5}}), "windows.lateness: not a duration: 5"),
        (one({"windows": {"sizes": ["1s"], "lateness": "2h"}}), "windows.lateness: at most 1h"),
        (
            one({"windows": {"sizes": ["1s"], "field": "a b"}}),
            "windows.field: String does not match",
        ),
        (
            one({"windows": {"sizes": ["1s"], "topic": "{topic}"}}),
            "windows.topic: must contain {topic} and {window}",
        ),
        (
            one({"windows": {"sizes": ["1s"], "topic": "{topic}:{field}"}}),
            "windows.topic: unknown placeholder {field}",
        ),
        (
            one({"windows": {"sizes": ["1s"], "topic": "X{topic}:{window}"}}),
            "windows.topic: 'X{topic}:{window}' cannot make a valid topic",
        ),
        (one({"windows": {"sizes": ["1s"], "extra": 1}}), "windows.extra: Unknown field."),
        (one({"routes": [{}]}), "pipelines[0] (p).routes[0].to: Missing data"),
        (
            one({"routes": [{"to": "Orders.{r}"}]}),
            "routes[0].to: 'Orders.{r}' cannot make a valid topic",
        ),
        (
            one({"routes": [{"to": "o.{r x}"}]}),
            "routes[0].to: {r x} is not {topic} or a data field path",
        ),
        (
            one({"routes": [{"to": "o", "fallback": "O"}]}),
            "routes[0].fallback: 'O' is not a valid topic name",
        ),
        (one({"routes": [{"to": "o", "when": "x ="}]}), "routes[0].when: cannot parse"),
        ([1, 2], "(file): must be a mapping"),
    ],
)
def test_errors_name_the_offending_field(raw: Any, expected: str) -> None:
    found = problems(raw)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "pipelines": [
                {"name": "a", "match": "a", "windows": {"sizes": ["x"]}},
                {"name": "b", "match": "b", "routes": [{"to": "B"}], "bogus": True},
            ]
        }
    )
    assert len(found) == 3, found


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"pipelines": [{"name": "a", "match": "a"}, {"name": "a", "match": "b"}]},
            "pipelines[1] (a).name: duplicate of pipelines[0]",
        ),
        (
            {
                "pipelines": [
                    {"name": "m", "match": "metrics.*", "windows": {"sizes": ["1s"]}},
                    {"name": "r", "match": "x", "routes": [{"to": "metrics.cpu:1s"}]},
                ]
            },
            "pipelines[1] (r).routes[0].to: 'metrics.cpu:1s' is a window output of pipeline 'm'",
        ),
        (
            {
                "pipelines": [
                    {"name": "m", "match": "metrics.*", "windows": {"sizes": ["1s"]}},
                    {
                        "name": "r",
                        "match": "x",
                        "routes": [{"to": "{k}", "fallback": "metrics.a:1s"}],
                    },
                ]
            },
            "routes[0].fallback: 'metrics.a:1s' is a window output",
        ),
        (
            {
                "pipelines": [
                    {"name": "m", "match": "metrics.*", "windows": {"sizes": ["1s", "1m"]}},
                    {
                        "name": "n",
                        "match": "metrics.*",
                        "windows": {"sizes": ["60s"], "field": "v"},
                    },
                ]
            },
            "pipelines[1] (n).windows: outputs ['1m'] collide with pipelines[0] (m)",
        ),
    ],
)
def test_cross_checks(raw: Any, expected: str) -> None:
    found = problems(raw)
    assert any(expected in p for p in found), found


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(PipelinesError, match="cannot read it"):
        load_pipelines(str(tmp_path / "missing.yaml"))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("pipelines: [\n  - name: a\n")
    with pytest.raises(
        PipelinesError, match="not valid YAML at line 2, column 3: expected the node content"
    ):
        load_pipelines(str(bad_yaml))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(PipelinesError, match="not valid JSON"):
        load_pipelines(str(bad_json))


def test_error_message_lists_the_file_and_problems() -> None:
    with pytest.raises(PipelinesError) as info:
        build({"pipelines": [{"name": "a"}]}, "/etc/p.yaml")
    assert str(info.value) == (
        "pipelines file /etc/p.yaml is invalid:\n"
        "  pipelines[0] (a).match: Missing data for required field."
    )


@pytest.mark.parametrize(
    ("text", "ms", "label"),
    [
        ("500ms", 500, "500ms"),
        ("1s", 1000, "1s"),
        ("60s", 60_000, "1m"),
        ("90s", 90_000, "90s"),
        ("1h", 3_600_000, "1h"),
        ("1d", 86_400_000, "1d"),
        ("1500ms", 1500, "1500ms"),
    ],
)
def test_durations(text: str, ms: int, label: str) -> None:
    assert parse_duration(text) == ms
    assert duration_label(ms) == label


@pytest.mark.parametrize("text", ["1", "1.5s", "-1s", "s", "1 sec", True, None, 1000])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
