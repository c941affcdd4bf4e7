"""The benchmark's pure parts: the search for a maximum sustained rate (bench/stepping.py)
and the report (bench/report.py)."""

from __future__ import annotations

import pytest

from bench.stepping import RateSearch


def run(search: RateSearch, capacity: float) -> list[float]:
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, rate <= capacity)
    return tried


def test_climbs_geometrically_then_bisects_the_bracket() -> None:
    search = RateSearch(1000, factor=2, refinements=2)
    tried = run(search, capacity=37_000)
    assert tried[:7] == [1000, 2000, 4000, 8000, 16000, 32000, 64000]
    assert len(tried) == 9  # two refinements between 32,000 and 64,000
    assert 32_000 <= search.best <= 37_000
    assert all(32_000 < r < 64_000 for r in tried[7:])


def test_comes_down_when_the_first_step_fails() -> None:
    search = RateSearch(1000, factor=2, refinements=1)
    run(search, capacity=300)
    assert 250 <= search.best <= 300


def test_stops_at_the_ceiling_and_reports_nothing_when_all_fail() -> None:
    capped = RateSearch(1000, factor=2, ceiling=3000)
    assert run(capped, capacity=1e9) == [1000, 2000, 3000]
    hopeless = RateSearch(8, factor=2, floor=1)
    run(hopeless, capacity=0)
    assert hopeless.best == 0


def test_rejects_a_search_that_cannot_move() -> None:
    with pytest.raises(ValueError, match="factor"):
        RateSearch(100, factor=1)


def test_report_takes_medians_and_ratios_to_each_reference() -> None:
    from bench.report import collect, ratios, table

    runs = [
        {"fanout": {"ours": {"sustained_per_s": v}, "node": {"sustained_per_s": 2 * v}}}
        for v in (1000.0, 3000.0, 2000.0)
    ]
    results = collect(runs)
    assert results["fanout"]["ours"]["sustained_per_s"] == {
        "runs": [1000.0, 3000.0, 2000.0],
        "median": 2000.0,
    }
    assert ratios(results)["fanout"]["node"]["sustained_per_s"] == 0.5
    text = table(results, {"fanout": "fan-out 1x1,000"})
    row = next(line for line in text.splitlines() if line.startswith("fan-out 1x1,000"))
    assert row.split()[-4:] == ["2,000", "4,000", "0.50x", "±50%"]
