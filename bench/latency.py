"""`python -m bench.latency`: what durability costs in latency, against Node.

The whole durable path of ours (HTTP ingest -> ingest stream -> worker -> commit ->
fan-out -> the web's hand-out -> socket) against Node's emitter -> Redis pub/sub ->
socket.io server, 1,000 subscribers of one topic at fixed rates (50 and 100 events/s by
default), the two interleaved run by run (ours first in odd runs, Node first in even
ones). Latency is from the publisher's clock in each event to the kernel's receive
timestamp at a sampled client's socket (`bench/probe.py`, every 10th subscriber), as in
`python -m bench --scenarios pipeline`; the cores are pinned as there (the servers alone
on `--server-cpu`; Redis, the publishers, our worker and the load generator on
`--client-cpu`).

Then where our milliseconds go: the mean time events spend in each stage, from the
probe (publisher -> ingest accepted -> socket, split at the event id's time) and from the
stage histograms the web and the worker export (`realtime_stage_seconds{stage}`,
`realtime_fanout_latency_seconds`, `realtime_delivery_latency_seconds`), read from their
/metrics before and after each step. Means, so the stages add up to the end-to-end
mean; the worker's stages are per batch (at these rates nearly always one event). And
what held the event loops meanwhile, a step's p99 when it recurs: the web's and the
worker's lag samples over 10 ms, and their GC collections (`realtime.core.loopwatch`).

With `--baseline DIR` (another checkout, e.g. `git archive main | tar -x -C DIR`), a
third column runs that version of ours (`before`) in the same runs, interleaved too.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench import scenarios
from bench.__main__ import _cpu, _realtime_setting
from bench.loadgen import Tally
from bench.probe import Probe
from bench.servers import NODE, OURS, BenchError, node_ready
from realtime.dev.embedded import free_port
from realtime.loadtest import stamped

BEFORE = "before"  # ours, from the --baseline checkout
WARMUP_S = 1.0
LAG_MS = 10.0  # event-loop lag samples above this count as the loop held (a bucket bound)

# (key, label): the split of ours, in path order. Keys: the probe's `to_ingest` and
# `socket`, `fanout` and the stages of realtime_stage_seconds.
SPLIT = (
    ("to_ingest", "publisher -> ingest accepted (HTTP, group commit, XADD)"),
    ("read", "accepted -> the worker holds it (stream read)"),
    ("process", "worker: read -> commit sent (decode, plan, encode)"),
    ("fanout", "commit sent -> the web has it (commit script, pub/sub, decode)"),
    ("queue", "web: received -> hand-out starts (batching tick, hand-outs before it)"),
    ("handout", "hand-out: start -> handed to the connection"),
    ("socket", "handed to the connection -> at the client's socket (write, loopback)"),
)
PARTS = (
    ("commit", "  of which the commit's round trip, as the worker sees it", "fanout"),
    ("recovery_log", "  of which waiting for the recovery-log write", "handout"),
)
SPLIT_KEYS = [key for key, _ in SPLIT] + [key for key, _, _ in PARTS] + ["mean_ms"]


@dataclass
class Scrape:
    """Histogram sums and counts from one /metrics page: name (and stage) -> (sum, count);
    `held`: what held the event loop (`realtime.core.loopwatch`): `lag_over` lag samples
    over LAG_MS, `gc` collections of every generation, `gc_s` their pauses."""

    series: dict[str, tuple[float, float]]
    held: dict[str, float] = field(default_factory=dict)

    def held_delta(self, before: Scrape, key: str) -> float:
        """How much of `held[key]` came between the two pages (NaN: not exported)."""
        if key not in self.held or key not in before.held:
            return math.nan
        return self.held[key] - before.held[key]

    def mean_ms(self, before: Scrape, key: str) -> float:
        total, count = self.series.get(key, (0.0, 0.0))
        total0, count0 = before.series.get(key, (0.0, 0.0))
        return (total - total0) / (count - count0) * 1000 if count > count0 else math.nan


async def scrape(session: aiohttp.ClientSession, url: str) -> Scrape:
    async with session.get(url) as response:
        return parse(await response.text())


def parse(text: str) -> Scrape:
    """One /metrics page."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    held: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "realtime_gc_pause_seconds":
            for sample in family.samples:
                key = {"_count": "gc", "_sum": "gc_s"}.get(sample.name.removeprefix(family.name))
                if key is not None:
                    held[key] = held.get(key, 0.0) + sample.value
            continue
        if family.name == "realtime_event_loop_lag_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket") and float(sample.labels["le"]) == LAG_MS / 1000:
                    held["lag_under"] = sample.value
                elif sample.name.endswith("_count"):
                    held["lag"] = sample.value
            if "lag" in held and "lag_under" in held:
                held["lag_over"] = held["lag"] - held["lag_under"]
            continue
        for sample in family.samples:
            base = family.name.removeprefix("realtime_").removesuffix("_seconds")
            key = sample.labels.get("stage", base)
            if sample.name.endswith("_sum"):
                sums[key] = sample.value
            elif sample.name.endswith("_count"):
                counts[key] = sample.value
    return Scrape({k: (sums[k], counts[k]) for k in sums if k in counts}, held)


def mean(values: Any) -> float:
    values = list(values)
    return statistics.fmean(values) if values else math.nan


async def measure(
    bench: scenarios.Bench,
    kind: str,
    rates: list[float],
    subscribers: int,
    seconds: float,
    code: Path | None = None,
) -> dict[float, dict[str, float]]:
    """One server kind at each rate: latency at the socket, and (ours) the split.
    `code`: ours from that checkout."""
    topic = "bench.latency"
    tally = Tally()
    metrics_port = free_port()
    worker_env = {"REALTIME_METRICS_PORT": str(metrics_port)}
    out: dict[float, dict[str, float]] = {}
    mode = "http" if kind == OURS else "stream"
    async with (
        scenarios.deploy(bench, kind, mode=mode, worker_env=worker_env, code=code) as dep,
        aiohttp.ClientSession() as session,
    ):
        dep.probe = await Probe.start(
            dep.urls, topic, bench.deflate, bench.client_cpus, bench.log_dir
        )
        clients = await scenarios._open_probed(bench, dep, subscribers, topic, tally)
        pages = (
            [f"{dep.urls[0]}/metrics", f"http://127.0.0.1:{metrics_port}/metrics"]
            if kind == OURS
            else []
        )
        try:
            scenarios._check_clients(clients, subscribers - dep.probe.clients)
            await scenarios.run_step(
                bench, dep, tally, [topic], subscribers, rates[0] * subscribers / 4, WARMUP_S
            )
            for rate in rates:
                before = [await scrape(session, page) for page in pages]
                step = await scenarios.run_step(
                    bench, dep, tally, [topic], subscribers, rate * subscribers, seconds
                )
                after = [await scrape(session, page) for page in pages]
                figures = {
                    "p50_ms": step.arrival_p50_ms,
                    "p99_ms": step.arrival_p99_ms,
                    "mean_ms": mean(tally.arrival_ms),
                    "loss": step.loss,
                    "events_per_packet": step.events_per_packet,
                    "us_per_delivery": step.us_per_delivery,
                    "client_core_busy": step.client_core_busy,
                }
                if pages:
                    figures.update(_split(tally, before, after))
                out[rate] = figures
        finally:
            clients.close()
    return out


def _split(tally: Tally, before: list[Scrape], after: list[Scrape]) -> dict[str, float]:
    web0, worker0 = before
    web, worker = after
    delivered = web.mean_ms(web0, "delivery_latency")  # accepted -> handed over
    return {
        "to_ingest": tally.to_ingest.mean,
        "read": worker.mean_ms(worker0, "read"),
        "process": worker.mean_ms(worker0, "process"),
        "commit": worker.mean_ms(worker0, "commit"),
        "fanout": web.mean_ms(web0, "fanout_latency"),
        "queue": web.mean_ms(web0, "queue"),
        "recovery_log": web.mean_ms(web0, "recovery_log"),
        "handout": web.mean_ms(web0, "handout"),
        "socket": tally.from_ingest.mean - delivered,
        "web_lag_over": web.held_delta(web0, "lag_over"),
        "web_lag": web.held_delta(web0, "lag"),
        "worker_lag_over": worker.held_delta(worker0, "lag_over"),
        "gc": web.held_delta(web0, "gc") + worker.held_delta(worker0, "gc"),
        "gc_ms": (web.held_delta(web0, "gc_s") + worker.held_delta(worker0, "gc_s")) * 1000,
    }


def _stats(values: list[float]) -> tuple[float, float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    return statistics.median(finite), min(finite), max(finite)


def _cell(values: list[float], fmt: str = ".1f") -> str:
    mid, low, high = _stats(values)
    if math.isnan(mid):
        return "-"
    if len(values) == 1:
        return format(mid, fmt)
    return f"{mid:{fmt}} ({low:{fmt}}-{high:{fmt}})"


def _ratios(ours: list[float], node: list[float]) -> str:
    """The ratio of the medians, and its range over the runs (run by run)."""
    mid = statistics.median(ours) / statistics.median(node)
    per_run = [a / b for a, b in zip(ours, node, strict=True) if b]
    return f"{mid:.2f}x ({min(per_run):.2f}-{max(per_run):.2f})"


def report(runs: list[dict[str, dict[float, dict[str, float]]]], rates: list[float]) -> str:
    def values(kind: str, rate: float, key: str) -> list[float]:
        return [run[kind][rate].get(key, math.nan) for run in runs if kind in run]

    kinds = [k for k in (OURS, BEFORE, NODE) if any(k in run for run in runs)]
    pairs = [
        (a, b)
        for a, b in ((OURS, NODE), (BEFORE, NODE), (OURS, BEFORE))
        if a in kinds and b in kinds
    ]
    lines = ["end to end, publisher's clock -> the client's socket (ms; medians, min-max):", ""]
    head = f"{'events/s':>8}  {'':4}" + "".join(f"  {k:>22}" for k in kinds)
    head += "".join(f"  {a + '/' + b:>18}" for a, b in pairs)
    lines += [head, "-" * len(head)]
    for rate in rates:
        for q in ("p50", "p99"):
            row = f"{rate:>8g}  {q:4}"
            row += "".join(f"  {_cell(values(k, rate, f'{q}_ms')):>22}" for k in kinds)
            for a, b in pairs:
                row += f"  {_ratios(values(a, rate, f'{q}_ms'), values(b, rate, f'{q}_ms')):>18}"
            lines.append(row)
    for kind in (OURS, BEFORE):
        for rate in rates:
            if not any(not math.isnan(v) for v in values(kind, rate, "queue")):
                continue
            lines += [
                "",
                f"where the milliseconds of {kind} go at {rate:g} events/s (means, ms):",
                "",
            ]
            lines += _split_rows([(key, values(kind, rate, key)) for key in SPLIT_KEYS])
    held = [
        (k, r)
        for k in (OURS, BEFORE)
        for r in rates
        if not math.isnan(_stats(values(k, r, "web_lag"))[0])
    ]
    if held:
        lines += [
            "",
            f"what held the event loops: lag samples over {LAG_MS:g} ms (one per 100 ms),"
            " GC collections (web and worker):",
            "",
        ]
    for kind, rate in held:
        lines.append(
            f"{kind} at {rate:g} events/s: web {_cell(values(kind, rate, 'web_lag_over'), '.0f')}"
            f" of {_cell(values(kind, rate, 'web_lag'), '.0f')}, worker"
            f" {_cell(values(kind, rate, 'worker_lag_over'), '.0f')}; GC"
            f" {_cell(values(kind, rate, 'gc'), '.0f')} collections,"
            f" {_cell(values(kind, rate, 'gc_ms'), '.1f')} ms"
        )
    lines.append("")
    for rate in rates:
        for label, key, scale in (
            ("events per packet", "events_per_packet", 1.0),
            ("server us per delivery", "us_per_delivery", 1.0),
            ("client core busy %", "client_core_busy", 100.0),
        ):
            cells = ", ".join(
                f"{k} {_cell([v * scale for v in values(k, rate, key)])}" for k in kinds
            )
            lines.append(f"{rate:g} events/s, {label}: {cells}")
    return "\n".join(lines)


def _split_rows(figures: list[tuple[str, list[float]]]) -> list[str]:
    by_key = dict(figures)

    def values(key: str) -> list[float]:
        return by_key[key]

    total = 0.0
    rows = []
    for key, label in SPLIT:
        mid = _stats(values(key))[0]
        total += 0.0 if math.isnan(mid) else mid
        rows.append((label, _cell(values(key), ".2f")))
        for part, part_label, under in PARTS:
            if under == key:
                rows.append((part_label, _cell(values(part), ".2f")))
    rows.append(("sum of the stages", f"{total:.2f}"))
    rows.append(("end to end (mean, the probe)", _cell(values("mean_ms"), ".2f")))
    width = max(len(label) for label, _ in rows)
    return [f"{label:<{width}}  {cell:>22}" for label, cell in rows]


def _order(kinds: list[str], run: int) -> Iterator[str]:
    """The kinds, rotated by one each run (interleaved)."""
    k = run % len(kinds)
    return iter(kinds[k:] + kinds[:k])


async def main_async(args: argparse.Namespace, log_dir: Path) -> list[Any]:
    bench = scenarios.Bench.pinned(
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        log_dir=log_dir,
        profile=scenarios.DEFAULT,
        deflate=not args.no_deflate,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    redis = bench.redis
    runs = []
    kinds = [k for k in (OURS, NODE) if k in args.servers]
    if args.baseline is not None:
        kinds.insert(1, BEFORE)
    try:
        for n in range(args.runs):
            results: dict[str, dict[float, dict[str, float]]] = {}
            for kind in _order(kinds, n):
                bench.progress(f"[run {n + 1}/{args.runs}] {kind}")
                results[kind] = await measure(
                    bench,
                    OURS if kind == BEFORE else kind,
                    args.rates,
                    args.subscribers,
                    args.seconds,
                    args.baseline if kind == BEFORE else None,
                )
            runs.append(results)
    finally:
        redis.cleanup()
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--rates", type=lambda v: [float(r) for r in v.split(",")], default=[50.0, 100.0],
        help="events/s to the topic (comma-separated; default 50,100)",
    )  # fmt: skip
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate (default 5)")
    parser.add_argument("--servers", default="ours,node", help="ours,node (default both)")
    parser.add_argument("--server-cpu", type=_cpu, default=0)
    parser.add_argument("--client-cpu", type=_cpu, default=1)
    parser.add_argument("--no-deflate", action="store_true")
    parser.add_argument(
        "--ours-env", metavar="REALTIME_X=V", action="append", type=_realtime_setting,
        default=[], help="a setting for our web and worker (repeatable)",
    )  # fmt: skip
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="also run ours from DIR")
    parser.add_argument("--log-dir", type=Path)
    args = parser.parse_args()
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
    if NODE in args.servers and (why := node_ready()):
        print(f"python -m bench.latency: the Node reference cannot run: {why}", file=sys.stderr)
        return 2
    if not stamped.supported():
        print("python -m bench.latency: needs kernel receive timestamps (Linux)", file=sys.stderr)
        return 2
    os.environ.update(dict(args.ours_env))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="realtime-latency-"))
    try:
        import uvloop

        runs = uvloop.run(main_async(args, log_dir))
    except BenchError as exc:
        print(f"python -m bench.latency: {exc}\n(logs in {log_dir})", file=sys.stderr)
        return 1
    print(report(runs, args.rates))
    print(
        f"\n{args.runs} run(s), {args.subscribers:,} subscribers, {args.seconds:g} s per rate;"
        f" load average {os.getloadavg()[0]:.1f}; logs in {log_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
