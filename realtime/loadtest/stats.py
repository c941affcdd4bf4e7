"""Measurement of a load test, pure: latency histograms and percentiles.

Latencies go into a log-bucketed histogram (1% relative precision, constant memory), so a
long run at 100,000+ deliveries a second costs a dict increment per delivery, not a list
that grows without bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_STEP = math.log(1.01)  # bucket width: 1% of the value
INV_STEP = 1.0 / _STEP
FLOOR_MS = 0.001  # values below (clock noise, negative skew) count as this


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; NaN when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def median(values: Iterable[float]) -> float:
    """The median of the finite values; NaN when there are none."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


@dataclass
class Histogram:
    """Latencies in milliseconds, bucketed logarithmically (relative error < 0.5%)."""

    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def record(self, value_ms: float) -> None:
        if value_ms < FLOOR_MS:
            value_ms = FLOOR_MS
        index = math.floor(math.log(value_ms) * INV_STEP)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total += value_ms
        if value_ms > self.max:
            self.max = value_ms

    def merge(self, other: Histogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..100), as its bucket's geometric middle."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0..100, got {q}")
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(math.exp((index + 0.5) * _STEP), self.max)
        return self.max  # pragma: no cover - the counts always add up to self.count

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def summary(self, quantiles: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
        """{"p50": ..., "p95": ..., "p99": ..., "max": ...} in ms; None when empty."""
        out: dict[str, float | None] = {}
        for q in quantiles:
            value = self.percentile(q)
            out[f"p{q:g}"] = None if math.isnan(value) else round(value, 3)
        out["max"] = round(self.max, 3) if self.count else None
        return out
