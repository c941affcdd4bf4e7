"""The aggregate of one window: count, sum, min, max, avg, last and p50/p95/p99 (pure).

What the window aggregator (`processors/pipelines/windows.py`) keeps per pane and per window, and
what a closed window's output event carries. Three properties matter and are tested.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import math
from typing import Any

from processors.pipelines.quantiles import EXACT_LIMIT, Quantiles

PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
_QS = tuple(q for _, q in PERCENTILES)
_NO_TS = -(2**63)


def numeric(value: object) -> float | None:
    """`value` as a finite float, or None: JSON numbers only (not booleans)."""
    if type(value) is float:
        if math.isfinite(value):
            return value + 0.0  # -0.0 -> 0.0, so min/max do not depend on order
        return None
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return None
    return None


class Aggregate:
    """Summary of a multiset of (value, ts, ingest id) events."""

    __slots__ = (
        "_state",
        "count",
        "last",
        "last_ms",
        "last_seq",
        "last_ts",
        "max",
        "min",
        "quantiles",
        "sum_exp",
        "sum_mant",
    )

    def __init__(self) -> None:
        self.count = 0
        # The exact sum is sum_mant * 2**sum_exp (Python ints do not overflow).
        self.sum_mant = 0
        self.sum_exp = 0
        self.min = math.inf
        self.max = -math.inf
        self.last = 0.0
        self.last_ts = _NO_TS
        self.last_ms = 0
        self.last_seq = 0
        self.quantiles = Quantiles()
        # to_state() of an unchanged aggregate is reused: a window's larger sizes change
        # once per pane, but are checkpointed with every batch that touches the topic.
        self._state: list[Any] | None = None

    def add(self, value: float, ts: int, ms: int, seq: int) -> None:
        """Add one event: a finite float (see `numeric`), its event time and ingest id."""
        self._state = None
        self.count += 1
        numerator, denominator = value.as_integer_ratio()
        exp = 1 - denominator.bit_length()  # denominator is a power of two
        if exp >= self.sum_exp:
            self.sum_mant += numerator << (exp - self.sum_exp)
        else:
            self.sum_mant = (self.sum_mant << (self.sum_exp - exp)) + numerator
            self.sum_exp = exp
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        last_ts = self.last_ts
        if ts > last_ts or (
            ts == last_ts and (ms > self.last_ms or (ms == self.last_ms and seq > self.last_seq))
        ):
            self.last = value
            self.last_ts = ts
            self.last_ms = ms
            self.last_seq = seq
        values = self.quantiles.values
        if values is not None and len(values) < EXACT_LIMIT:
            values.append(value)  # the common case, inlined: small windows stay exact
        else:
            self.quantiles.add(value)

    def _add_exact(self, mant: int, exp: int) -> None:
        if exp >= self.sum_exp:
            self.sum_mant += mant << (exp - self.sum_exp)
        else:
            self.sum_mant = (self.sum_mant << (self.sum_exp - exp)) + mant
            self.sum_exp = exp

    def merge(self, other: Aggregate) -> None:
        """Add all of `other`'s events to this aggregate."""
        if not other.count:
            return
        self._state = None
        self.count += other.count
        self._add_exact(other.sum_mant, other.sum_exp)
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if (other.last_ts, other.last_ms, other.last_seq) > (
            self.last_ts,
            self.last_ms,
            self.last_seq,
        ):
            self.last = other.last
            self.last_ts = other.last_ts
            self.last_ms = other.last_ms
            self.last_seq = other.last_seq
        self.quantiles.merge(other.quantiles)

    def copy(self) -> Aggregate:
        new = Aggregate()
        new.merge(self)
        return new

    @property
    def sum(self) -> float:
        """The exact sum, correctly rounded to a float (like `math.fsum`)."""
        mant, exp = self.sum_mant, self.sum_exp
        try:
            if exp >= 0:
                return float(mant << exp)
            return mant / (1 << -exp)  # int / int is correctly rounded in Python
        except OverflowError:  # beyond the largest float: JSON shows it as null
            return math.inf if mant > 0 else -math.inf

    def summary(self) -> dict[str, Any]:
        """count, sum, min, max, avg, last, p50, p95, p99 (None for an empty aggregate)."""
        if not self.count:
            empty: dict[str, Any] = dict.fromkeys(("sum", "min", "max", "avg", "last"))
            empty.update((name, None) for name, _ in PERCENTILES)
            return {"count": 0, **empty}
        total = self.sum
        out: dict[str, Any] = {
            "count": self.count,
            "sum": total,
            "min": self.min,
            "max": self.max,
            "avg": self._avg(total),
            "last": self.last,
        }
        values = self.quantiles.quantiles(_QS, self.min, self.max)
        for (name, _), value in zip(PERCENTILES, values, strict=True):
            out[name] = value
        return out

    def _avg(self, total: float) -> float:
        if math.isfinite(total):
            return total / self.count
        # The float sum overflowed; the exact one still has a finite mean.
        mant, exp = self.sum_mant, self.sum_exp
        return (mant << exp) / self.count if exp >= 0 else mant / (self.count << -exp)

    def _normalised_sum(self) -> tuple[int, int]:
        mant, exp = self.sum_mant, self.sum_exp
        if not mant:
            return 0, 0
        shift = (mant & -mant).bit_length() - 1
        return mant >> shift, exp + shift

    def to_state(self) -> list[Any]:
        """Canonical JSON-able form; big sum mantissas as decimal strings (orjson: 64 bit).
        Do not modify the result: it is cached until the aggregate changes."""
        if self._state is not None:
            return self._state
        mant, exp = self._normalised_sum()
        self._state = [
            self.count,
            mant if -(2**63) <= mant < 2**63 else str(mant),
            exp,
            self.min if self.count else None,
            self.max if self.count else None,
            [self.last, self.last_ts, self.last_ms, self.last_seq] if self.count else None,
            self.quantiles.to_state(),
        ]
        return self._state

    @classmethod
    def from_state(cls, state: list[Any]) -> Aggregate:
        count, mant, exp, lo, hi, last, quantiles = state
        new = cls()
        new.count = int(count)
        if new.count < 0:
            raise ValueError("negative count")
        new.sum_mant = int(mant)
        new.sum_exp = int(exp)
        if new.count:
            new.min = float(lo)
            new.max = float(hi)
            new.last = float(last[0])
            new.last_ts, new.last_ms, new.last_seq = (int(x) for x in last[1:])
        new.quantiles = Quantiles.from_state(quantiles)
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Aggregate):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Aggregate({self.to_state()!r})"
