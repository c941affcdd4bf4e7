"""Percentiles of a window's values: exact while small, a DDSketch above (pure, no I/O).

Part of the aggregate state (`processors/pipelines/aggregates.py`) that the window aggregator keeps
per open window. It must merge exactly and serialise compactly, because windows are
assembled from panes and checkpointed in Redis.

Rank rule: for values sorted as x[0] <= ... <= x[n-1], the q-quantile is x[r] with
r = floor(q * (n - 1)) (numpy's `method="lower"`; the rule DDSketch uses).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ddsketch.mapping import LogarithmicMapping

ALPHA = 0.01
EXACT_LIMIT = 64
MAX_BINS = 2048

_MAPPING = LogarithmicMapping(ALPHA)
_MIN_INDEXABLE = _MAPPING.min_possible
_key = _MAPPING.key
# `_key` inlined for the per-value loop (`_sketch_add_all`): the mapping's own arithmetic,
# log2(value) / log2(gamma), rounded up; tests/test_quantiles.py checks it against `_key`.
_MULTIPLIER = math.log(2) / math.log1p(2 * ALPHA / (1 - ALPHA))


def _bucket_value(key: int) -> float:
    try:
        return float(_MAPPING.value(key))
    except OverflowError:
        return float("inf")


def _add_key(store: dict[int, int], key: int, count: int) -> None:
    old = store.get(key)
    if old is not None:
        store[key] = old + count
        return
    store[key] = count
    if len(store) > MAX_BINS:
        _collapse(store)


def _collapse(store: dict[int, int]) -> None:
    """Fold the lowest buckets into the lowest kept one, leaving MAX_BINS buckets.

    Canonical: the result depends only on the multiset of keys added, not their order.
    """
    keys = sorted(store)
    excess = len(keys) - MAX_BINS
    floor = keys[excess]
    store[floor] += sum(store.pop(k) for k in keys[:excess])


def _flat(store: dict[int, int]) -> list[int]:
    """[key0, count0, key1 - key0, count1, ...] in key order: small ints in JSON."""
    out: list[int] = []
    previous = 0
    for key in sorted(store):
        out.append(key - previous)
        out.append(store[key])
        previous = key
    return out


def _unflat(flat: list[int]) -> dict[int, int]:
    if len(flat) % 2:
        raise ValueError("odd-length bucket list")
    store: dict[int, int] = {}
    key = 0
    for i in range(0, len(flat), 2):
        key += int(flat[i])
        count = int(flat[i + 1])
        if count <= 0:
            raise ValueError("bucket count must be positive")
        store[key] = count
    return store


class Quantiles:
    """The values' distribution: a list while small, DDSketch buckets above EXACT_LIMIT."""

    __slots__ = ("negative", "positive", "values", "zeros")

    def __init__(self) -> None:
        self.values: list[float] | None = []
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self.zeros = 0

    @property
    def exact(self) -> bool:
        return self.values is not None

    def add(self, value: float) -> None:
        values = self.values
        if values is not None:
            values.append(value)
            if len(values) > EXACT_LIMIT:
                self._to_sketch()
            return
        self._sketch_add(value, 1)

    def _sketch_add(self, value: float, count: int) -> None:
        if value > _MIN_INDEXABLE:
            _add_key(self.positive, _key(value), count)
        elif value < -_MIN_INDEXABLE:
            _add_key(self.negative, _key(-value), count)
        else:
            self.zeros += count

    def _sketch_add_all(self, values: Iterable[float]) -> None:
        """`_sketch_add(value, 1)` for each value, inlined (windows merge every pane's
        values into their sketches: a per-event cost)."""
        positive, negative = self.positive, self.negative
        log, ceil, multiplier, lowest = math.log, math.ceil, _MULTIPLIER, _MIN_INDEXABLE
        for value in values:
            if value > lowest:
                store, key = positive, ceil(log(value, 2) * multiplier)
            elif value < -lowest:
                store, key = negative, ceil(log(-value, 2) * multiplier)
            else:
                self.zeros += 1
                continue
            old = store.get(key)
            if old is None:
                store[key] = 1
                if len(store) > MAX_BINS:
                    _collapse(store)
            else:
                store[key] = old + 1

    def _to_sketch(self) -> None:
        values = self.values or []
        self.values = None
        self._sketch_add_all(values)

    def merge(self, other: Quantiles) -> None:
        """Add every value of `other`; the result equals adding them one by one."""
        if other.values is not None:
            if self.values is not None:
                self.values.extend(other.values)
                if len(self.values) > EXACT_LIMIT:
                    self._to_sketch()
            else:
                self._sketch_add_all(other.values)
            return
        if self.values is not None:
            self._to_sketch()
        for key, count in other.positive.items():
            _add_key(self.positive, key, count)
        for key, count in other.negative.items():
            _add_key(self.negative, key, count)
        self.zeros += other.zeros

    def copy(self) -> Quantiles:
        new = Quantiles()
        new.values = None if self.values is None else list(self.values)
        new.positive = dict(self.positive)
        new.negative = dict(self.negative)
        new.zeros = self.zeros
        return new

    def quantiles(self, qs: tuple[float, ...], lo: float, hi: float) -> list[float | None]:
        """The q-quantile for each q (see the module docstring), clamped to [lo, hi]."""
        if self.values is not None:
            ordered = sorted(self.values)
            n = len(ordered)
            if not n:
                return [None for _ in qs]
            return [ordered[int(q * (n - 1))] for q in qs]
        n = self.zeros + sum(self.positive.values()) + sum(self.negative.values())
        if not n:
            return [None for _ in qs]
        # Buckets in value order: negatives from the largest magnitude, zero, positives.
        buckets: list[tuple[float, int]] = [
            (-_bucket_value(k), self.negative[k]) for k in sorted(self.negative, reverse=True)
        ]
        if self.zeros:
            buckets.append((0.0, self.zeros))
        buckets.extend((_bucket_value(k), self.positive[k]) for k in sorted(self.positive))
        out: list[float | None] = []
        for q in qs:
            rank = int(q * (n - 1))
            seen = 0
            value = buckets[-1][0]
            for bucket_value, count in buckets:
                seen += count
                if seen > rank:
                    value = bucket_value
                    break
            out.append(min(max(value, lo), hi))
        return out

    def to_state(self) -> list[Any]:
        """Canonical JSON-able form: [sorted values] while exact, else [zeros, +, -]."""
        if self.values is not None:
            return [sorted(self.values)]
        return [self.zeros, _flat(self.positive), _flat(self.negative)]

    @classmethod
    def from_state(cls, state: list[Any]) -> Quantiles:
        new = cls()
        if len(state) == 1:
            values = [float(v) for v in state[0]]
            if len(values) > EXACT_LIMIT:
                raise ValueError("too many exact values")
            new.values = values
            return new
        zeros, positive, negative = state
        new.values = None
        new.zeros = int(zeros)
        new.positive = _unflat(positive)
        new.negative = _unflat(negative)
        return new
