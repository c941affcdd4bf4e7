"""The benchmark's output: a human table (medians, ratios to the references, noise) and a
JSON document for machines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.servers import LABELS, NODE, OURS, PYSIO
from realtime.loadtest.stats import median


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str  # "higher", "lower" or "" (informational)
    fmt: str = ",.0f"


METRICS: dict[str, list[Metric]] = {
    "idle": [
        Metric("kib_per_connection", "KiB per connection", "lower", ".1f"),
        Metric("connects_per_s", "connects/s", "higher"),
        Metric("connect_p99_ms", "connect p99 ms", "lower", ".1f"),
        Metric("loadgen_cpu_max", "load generator CPU", "", ".0%"),
    ],
    "fanout": [
        Metric("sustained_per_s", "sustained deliveries/s", "higher"),
        Metric("sustained_p99_ms", "  p99 ms at sustained", "lower", ".1f"),
        Metric("sustained_us_per_delivery", "  server us/delivery", "lower", ".1f"),
        Metric("sustained_events_per_packet", "  events per packet", "", ".1f"),
        Metric("overloaded_per_s", "overloaded deliveries/s", "higher"),
        Metric("overloaded_us_per_delivery", "  server us/delivery", "lower", ".1f"),
        Metric("overloaded_events_per_packet", "  events per packet", "", ".1f"),
        Metric("loadgen_cpu_max", "load generator CPU (max)", "", ".0%"),
        Metric("loadgen_capacity_per_s", "load generator capacity, packets/s", "", ",.0f"),
        Metric("client_core_max", "client core busy (max)", "", ".0%"),
    ],
    "pipeline": [
        Metric("arrival_p50_ms", "end-to-end p50 ms, at the socket", "lower", ".1f"),
        Metric("arrival_p99_ms", "end-to-end p99 ms, at the socket", "lower", ".1f"),
        Metric("arrival_p50_ms_50%", "  p50 at half the rate", "lower", ".1f"),
        Metric("arrival_p99_ms_50%", "  p99 at half the rate", "lower", ".1f"),
        Metric("arrival_p50_ms_25%", "  p50 at a quarter of the rate", "lower", ".1f"),
        Metric("arrival_p99_ms_25%", "  p99 at a quarter of the rate", "lower", ".1f"),
        Metric("to_ingest_p99_ms", "  p99 publisher -> ingest accepted", "", ".1f"),
        Metric("from_ingest_p99_ms", "  p99 ingest accepted -> socket", "", ".1f"),
        Metric("p50_ms", "end-to-end p50 ms, handled by loadgen", "lower", ".1f"),
        Metric("p99_ms", "end-to-end p99 ms, handled by loadgen", "lower", ".1f"),
        Metric("loss", "loss", "lower", ".2%"),
        Metric("us_per_delivery", "server us/delivery", "lower", ".1f"),
        Metric("events_per_packet", "events per packet", "", ".1f"),
        Metric("loadgen_cpu_max", "load generator CPU", "", ".0%"),
    ],
}
METRICS["topics"] = [
    *METRICS["fanout"],
    Metric("fixed_us_per_delivery", "server us/delivery at the fixed rate", "lower", ".2f"),
    Metric("fixed_net_us_per_delivery", "  less the idle server's CPU", "lower", ".2f"),
    Metric("fixed_server_busy", "  server core busy at the fixed rate", "lower", ".0%"),
    Metric("idle_server_busy", "  server core busy, idle", "lower", ".1%"),
    Metric("fixed_p99_ms", "  p99 ms at the fixed rate", "lower", ".1f"),
]
METRICS["small-topics"] = METRICS["topics"]
METRICS["two-instances"] = [
    *METRICS["fanout"],
    Metric("unwatched_us_per_event", "us/event, topic not hosted", "lower", ".1f"),
]

METRICS["four-instances"] = [
    Metric("topic_us_per_event", "us/event on each non-hosting instance", "lower", ".2f"),
    Metric("common_us_per_event", "  same, one common channel (before)", "", ".2f"),
    Metric("ratio", "  interest-based / common channel", "lower", ".1%"),
    Metric("topic_cpu_ms", "  CPU ms of the three, topic channel", "", ".0f"),
    Metric("topic_idle_cpu_ms", "    of which idle (same time, no traffic)", "", ".0f"),
    Metric("common_cpu_ms", "  CPU ms of the three, common channel", "", ".0f"),
]

SERVER_ORDER = (OURS, PYSIO, NODE)


def collect(runs: Sequence[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """{scenario: {server: {metric: {"median", "runs"}}}} from per-run results."""
    out: dict[str, Any] = {}
    for run in runs:
        for scenario, servers in run.items():
            for server, metrics in servers.items():
                slot = out.setdefault(scenario, {}).setdefault(server, {})
                for key, value in metrics.items():
                    slot.setdefault(key, {"runs": []})["runs"].append(value)
    for servers in out.values():
        for metrics in servers.values():
            for entry in metrics.values():
                numbers = [v for v in entry["runs"] if isinstance(v, int | float)]
                if len(numbers) == len(entry["runs"]) and numbers:
                    entry["median"] = median(float(v) for v in numbers)
                else:
                    entry["median"] = entry["runs"][-1]
    return out


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """ours / reference for every metric both have."""
    out: dict[str, Any] = {}
    for scenario, servers in results.items():
        ours = servers.get(OURS, {})
        for ref in (PYSIO, NODE):
            theirs = servers.get(ref, {})
            for key, entry in ours.items():
                a, b = entry.get("median"), theirs.get(key, {}).get("median")
                if _number(a) and _number(b) and b:
                    out.setdefault(scenario, {}).setdefault(ref, {})[key] = a / b
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _fmt(value: Any, fmt: str) -> str:
    if not _number(value):
        return "-"
    return format(value, fmt)


def noise(entry: dict[str, Any]) -> float:
    """Spread of a metric over the runs: (max - min) / median."""
    numbers = [v for v in entry.get("runs", []) if _number(v)]
    mid = entry.get("median")
    if len(numbers) < 2 or not _number(mid) or not mid:
        return math.nan
    return float((max(numbers) - min(numbers)) / abs(mid))


def table(results: dict[str, Any], titles: dict[str, str]) -> str:
    servers = [s for s in SERVER_ORDER if any(s in v for v in results.values())]
    refs = [r for r in (PYSIO, NODE) if r in servers and OURS in servers]
    head = ["scenario", "metric", *(LABELS[s] for s in servers)]
    head += [f"ours/{'python' if r == PYSIO else 'node'}" for r in refs] + ["noise"]
    rows: list[list[str]] = []
    rat = ratios(results)
    for scenario, by_server in results.items():
        title = titles.get(scenario, scenario)
        for metric in METRICS.get(scenario, []):
            if not any(metric.key in by_server.get(s, {}) for s in servers):
                continue
            row = [title, metric.label + ("" if not metric.better else f" ({metric.better})")]
            title = ""
            for server in servers:
                row.append(
                    _fmt(by_server.get(server, {}).get(metric.key, {}).get("median"), metric.fmt)
                )
            for ref in refs:
                r = rat.get(scenario, {}).get(ref, {}).get(metric.key)
                row.append("-" if r is None or not metric.better else f"{r:.2f}x")
            spreads = [noise(by_server.get(s, {}).get(metric.key, {})) for s in servers]
            finite = [s for s in spreads if not math.isnan(s)]
            row.append(f"±{max(finite) / 2:.0%}" if finite else "-")
            rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = []
    for n, row in enumerate([head, *rows]):
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
