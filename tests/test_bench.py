"""The benchmark's own parts: the search for a maximum sustained rate (bench/stepping.py),
the report (bench/report.py) and the pipeline's latency probe (bench/probe.py)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from bench.loadgen import Tally
from bench.probe import Probe
from bench.stepping import RateSearch
from bench.stormload import Watcher
from realtime.core.settings import Settings
from realtime.loadtest import stamped
from realtime.web.app import DELIVERY
from tests.helpers.inprocess import serving


def run(search: RateSearch, capacity: float) -> list[float]:
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, rate <= capacity)
    return tried


@pytest.mark.unit
def test_climbs_geometrically_then_bisects_the_bracket() -> None:
    search = RateSearch(1000, factor=2, refinements=2)
    tried = run(search, capacity=37_000)
    assert tried[:7] == [1000, 2000, 4000, 8000, 16000, 32000, 64000]
    assert len(tried) == 9  # two refinements between 32,000 and 64,000
    assert 32_000 <= search.best <= 37_000
    assert all(32_000 < r < 64_000 for r in tried[7:])


@pytest.mark.unit
def test_comes_down_when_the_first_step_fails() -> None:
    search = RateSearch(1000, factor=2, refinements=1)
    run(search, capacity=300)
    assert 250 <= search.best <= 300


@pytest.mark.unit
def test_stops_at_the_ceiling_and_reports_nothing_when_all_fail() -> None:
    capped = RateSearch(1000, factor=2, ceiling=3000)
    assert run(capped, capacity=1e9) == [1000, 2000, 3000]
    hopeless = RateSearch(8, factor=2, floor=1)
    run(hopeless, capacity=0)
    assert hopeless.best == 0


@pytest.mark.unit
def test_rejects_a_search_that_cannot_move() -> None:
    with pytest.raises(ValueError, match="factor"):
        RateSearch(100, factor=1)


@pytest.mark.unit
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


@pytest.mark.unit
def test_latency_report_gives_ratios_and_a_split_that_adds_up() -> None:
    from bench.latency import BEFORE, SPLIT_KEYS, Scrape, _order, report

    before = Scrape({"read": (0.010, 10.0), "fanout_latency": (1.0, 4.0)})
    after = Scrape({"read": (0.030, 20.0), "fanout_latency": (1.0, 4.0)})
    assert after.mean_ms(before, "read") == pytest.approx(2.0)  # 20 ms over 10 batches
    assert math.isnan(after.mean_ms(before, "fanout_latency"))  # nothing new: no figure
    assert list(_order(["ours", BEFORE, "node"], 1)) == [BEFORE, "node", "ours"]

    def figures(p50: float) -> dict[str, float]:
        extra = ("events_per_packet", "us_per_delivery", "client_core_busy")
        return {key: 1.0 for key in [*SPLIT_KEYS, *extra]} | {"p50_ms": p50, "p99_ms": 2 * p50}

    runs = [
        {"ours": {50.0: figures(a)}, "node": {50.0: figures(b)}}
        for a, b in ((8, 4), (6, 3), (10, 4))
    ]
    text = report(runs, [50.0])
    p50 = next(line for line in text.splitlines() if line.split()[:2] == ["50", "p50"])
    assert "8.0 (6.0-10.0)" in p50  # ours
    assert "2.00x (2.00-2.50)" in p50  # medians 8 and 4; run by run 2, 2 and 2.5
    total = next(line for line in text.splitlines() if line.startswith("sum of the stages"))
    assert total.split()[-1] == "7.00"  # the seven stages, 1 ms each


@pytest.mark.unit
def test_latency_report_says_what_held_the_event_loops() -> None:
    """From the web's and the worker's /metrics: lag samples over 10 ms and GC pauses,
    per step; a version that exports neither (an older --baseline) shows none."""
    from bench.latency import _split, parse, report
    from bench.loadgen import Tally

    def page(under: int, count: int, gc: tuple[int, int], gc_s: float) -> str:
        return (
            "# TYPE realtime_event_loop_lag_seconds histogram\n"
            f'realtime_event_loop_lag_seconds_bucket{{le="0.005"}} {under - 1}\n'
            f'realtime_event_loop_lag_seconds_bucket{{le="0.01"}} {under}\n'
            f'realtime_event_loop_lag_seconds_bucket{{le="+Inf"}} {count}\n'
            f"realtime_event_loop_lag_seconds_count {count}\n"
            "realtime_event_loop_lag_seconds_sum 0.5\n"
            "# TYPE realtime_gc_pause_seconds histogram\n"
            f'realtime_gc_pause_seconds_count{{generation="0"}} {gc[0]}\n'
            f'realtime_gc_pause_seconds_sum{{generation="0"}} {gc_s / 2}\n'
            f'realtime_gc_pause_seconds_count{{generation="2"}} {gc[1]}\n'
            f'realtime_gc_pause_seconds_sum{{generation="2"}} {gc_s / 2}\n'
        )

    web0, web = parse(page(10, 10, (1, 0), 0.002)), parse(page(55, 60, (3, 1), 0.042))
    worker0, worker = parse(page(10, 10, (0, 0), 0.0)), parse(page(60, 60, (0, 0), 0.0))
    split = _split(Tally(), [web0, worker0], [web, worker])
    assert (split["web_lag_over"], split["web_lag"], split["worker_lag_over"]) == (5, 50, 0)
    assert split["gc"] == 3
    assert split["gc_ms"] == pytest.approx(40.0)
    old = _split(Tally(), [parse(""), parse("")], [parse(""), parse("")])
    assert math.isnan(old["web_lag"])
    text = report([{"ours": {50.0: split}, "before": {50.0: old}}], [50.0])
    held = [line for line in text.splitlines() if line.startswith(("ours at", "before at"))]
    assert held == ["ours at 50 events/s: web 5 of 50, worker 0; GC 3 collections, 40.0 ms"]


@pytest.mark.system
@pytest.mark.skipif(not stamped.supported(), reason="no SO_TIMESTAMPNS here")
async def test_the_probe_process_reports_its_share_of_a_step(
    settings: Settings, tmp_path: Path
) -> None:
    """The pipeline's stamped subscribers run in a process of their own (bench.probe):
    it counts the events of the current step only and hands back their latencies."""
    async with serving(settings.with_overrides(batch_tick_ms=0)) as (url, app):
        probe = await Probe.start([url], "pr.t", False, os.sched_getaffinity(0), tmp_path)
        try:
            assert (await probe.connect(3))["connected"] == 3
            assert probe.clients == 3
            delivery = app[DELIVERY]

            async def send(step: int, seq: int) -> None:
                now = int(time.time() * 1000)
                data = {"s": step, "t": now - 2, "seq": seq}
                await delivery.live("pr.t", [{"topic": "pr.t", "id": f"{now}-{seq}", "data": data}])

            # A first event through: each subscription's catch-up is over (events that
            # arrive during it go out together, in one packet, when it ends).
            await probe.step(5)
            await send(5, 0)
            first = Tally()
            first.reset(5)
            await probe.collect_into(first, per_client=1, wait_s=5.0)
            assert first.delivered == 3
            await probe.step(7)
            await send(6, 0)  # an older step's straggler: seen, not counted
            for seq in range(1, 5):
                await send(7, seq)
            tally = Tally()
            tally.reset(7)
            await probe.collect_into(tally, per_client=4, wait_s=5.0)
        finally:
            await probe.stop()
    assert (tally.delivered, tally.stale, tally.packets) == (12, 3, 12)
    assert len(tally.arrival_ms) == 12
    assert all(0 <= ms < 1000 for ms in tally.arrival_ms)
    assert tally.to_ingest.count == tally.from_ingest.count == 12
    assert 1 <= tally.to_ingest.percentile(50) <= 3  # the id's time minus data.t


@pytest.mark.unit
def test_a_storm_subscriber_counts_gaps_and_repeats_and_when_it_recovered() -> None:
    """bench.storm's check that nothing is lost or repeated: a topic's sequence numbers
    grow by the topic count; the first event published after the reconnect began
    marks the client recovered."""

    def event(seq: int, t: float, topic: str = "storm.0") -> dict[str, object]:
        return {"topic": topic, "id": f"{seq}-0", "ts": 0, "data": {"seq": seq, "t": t}}

    w = Watcher("storm.0", 5, "token")
    w.on_update(None, [event(0, 1.0), event(5, 2.0), event(3, 2.0, "storm.3")], 10.0)
    assert (w.gaps, w.dups, w.last_seq, w.last_id) == (0, 0, 5, "5-0")
    w.reconnect = 100.0  # dropped; back at t=100
    w.on_update(None, [event(20, 50.0)], 101.0)  # 10 and 15 are missing
    assert (w.gaps, w.first_update, w.recovered) == (2, 101.0, None)
    w.on_update(None, [event(20, 50.0), event(25, 100.5)], 102.0)
    assert (w.dups, w.recovered, w.last_seq) == (1, 102.0, 25)


@pytest.mark.unit
def test_loopdiag_report_attributes_stalls_in_the_window(tmp_path: Path) -> None:
    """`python -m bench.loopdiag report`: collections by generation, and stalls by what
    the watchdog saw running, inside the window only."""
    from bench.loopdiag import report

    log = tmp_path / "wt-web-1.log"
    log.write_text(
        "gc 100.5 gen=2 ms=30.0 cpu=29.0\n"
        "busy 101.0 cpu=25.0 samples=2\n"
        "   2 recovery.py:399:checkpoints < sessions.py:134:_flush\n"
        "busy 102.0 cpu=4.0 samples=1\n"
        "   1 hub.py:350:_deliver < hub.py:251:_hand_out\n"
        "hist 102.5 busy%=40 cpu {} wall {}\n"
        "busy 200.0 cpu=99.0 samples=1\n"
        "   1 hub.py:350:_deliver < hub.py:251:_hand_out\n"
    )
    text = report(log, (100.0, 150.0))
    assert "GC gen=2: 1 collections, CPU max 29.0 ms" in text
    assert "{'<50': 1, '<5': 1}" in text
    lines = text.splitlines()
    assert any("1 x, max  25.0 ms, over 10 ms   1: recovery checkpoint" in x for x in lines)
    assert any("1 x, max   4.0 ms, over 10 ms   0: hand-out" in x for x in lines)
    assert "99.0" not in text  # outside the window
