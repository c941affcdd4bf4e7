"""Tumbling event-time windows of one source topic: panes, watermark, lateness (pure).

The worker keeps one `TopicWindows` per (pipeline, source topic) through
`partition_windows.py`; this module decides which window an event belongs to, when
a window closes, and which events are too late.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processors.pipelines.aggregates import Aggregate

NEVER = -(2**62)  # below any epoch-ms timestamp; keeps the hot path free of None checks
FOREVER = 2**62


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Window sizes (ms, ascending, each a multiple of the first) and allowed lateness."""

    sizes: tuple[int, ...]
    lateness: int

    def __post_init__(self) -> None:
        if not self.sizes or any(s <= 0 for s in self.sizes):
            raise ValueError("window sizes must be positive")
        if list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError("window sizes must be distinct and ascending")
        if any(s % self.sizes[0] for s in self.sizes):
            raise ValueError("every window size must be a multiple of the smallest")
        if self.lateness < 0:
            raise ValueError("lateness must be >= 0")

    @property
    def pane(self) -> int:
        return self.sizes[0]

    def fingerprint(self) -> list[int]:
        return [self.lateness, *self.sizes]


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    size: int
    start: int
    aggregate: Aggregate

    @property
    def end(self) -> int:
        return self.start + self.size


class TopicWindows:
    """Open panes and windows of one (pipeline, source topic), and its watermark."""

    __slots__ = (
        "_lateness",
        "_next_close",
        "_pane",
        "last_ingest",
        "late",
        "max_ts",
        "open",
        "panes",
        "spec",
        "watermark",
    )

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self._pane = spec.sizes[0]
        self._lateness = spec.lateness
        self.watermark = NEVER
        self.max_ts = NEVER
        self.last_ingest = NEVER
        self.panes: dict[int, Aggregate] = {}
        # The open window of each size above the pane: (start, aggregate) or None.
        self.open: list[tuple[int, Aggregate] | None] = [None] * (len(spec.sizes) - 1)
        self.late = 0
        self._next_close = FOREVER

    @property
    def empty(self) -> bool:
        """Nothing open: only the watermark is left."""
        return not self.panes and not any(self.open)

    def add(self, value: float, ts: int, ms: int, seq: int, out: list[ClosedWindow]) -> bool:
        """Feed one event (ingest id ms-seq); False if late. Closed windows go to `out`."""
        # The per-event path: raise_watermark is inlined, spec fields are cached.
        lateness = self._lateness
        max_ts = self.max_ts
        if max_ts == NEVER:
            self.last_ingest = ms
        elif ms > self.last_ingest:
            watermark = max_ts + (ms - self.last_ingest) - lateness
            self.last_ingest = ms
            if watermark > self.watermark:
                self.watermark = watermark
                if watermark >= self._next_close:
                    self._close(out)
        pane = self._pane
        start = ts - ts % pane
        if start + pane <= self.watermark:
            self.late += 1
            return False
        aggregate = self.panes.get(start)
        if aggregate is None:
            aggregate = self.panes[start] = Aggregate()
            if start + pane < self._next_close:
                self._next_close = start + pane
        aggregate.add(value, ts, ms, seq)
        if ts > max_ts:
            self.max_ts = ts
            watermark = ts - lateness
            if watermark > self.watermark:
                self.watermark = watermark
                if watermark >= self._next_close:
                    self._close(out)
        return True

    def advance(self, clock_ms: int, out: list[ClosedWindow]) -> None:
        """The timer: the ingest clock is at `clock_ms` (see the module docstring)."""
        if self.max_ts != NEVER and clock_ms > self.last_ingest:
            self.raise_watermark(
                self.max_ts + (clock_ms - self.last_ingest) - self.spec.lateness, out
            )

    def raise_watermark(self, watermark: int, out: list[ClosedWindow]) -> None:
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        if watermark >= self._next_close:
            self._close(out)

    def _close(self, out: list[ClosedWindow]) -> None:
        watermark = self.watermark
        pane = self.spec.pane
        larger = self.spec.sizes[1:]
        for start in sorted(s for s in self.panes if s + pane <= watermark):
            aggregate = self.panes.pop(start)
            out.append(ClosedWindow(pane, start, aggregate))
            for i, size in enumerate(larger):
                window_start = start - start % size
                current = self.open[i]
                if current is not None and current[0] != window_start:
                    # An earlier window of this size: it ended before this pane began.
                    out.append(ClosedWindow(size, current[0], current[1]))
                    current = None
                if current is None:
                    self.open[i] = (window_start, aggregate.copy())
                else:
                    current[1].merge(aggregate)
        next_close = FOREVER
        for i, size in enumerate(larger):
            current = self.open[i]
            if current is None:
                continue
            if current[0] + size <= watermark:
                out.append(ClosedWindow(size, current[0], current[1]))
                self.open[i] = None
            else:
                next_close = min(next_close, current[0] + size)
        if self.panes:
            next_close = min(next_close, min(self.panes) + pane)
        self._next_close = next_close

    def to_state(self) -> dict[str, Any]:
        """JSON-able; `late` is a metric, not state."""
        return {
            "f": self.spec.fingerprint(),
            "w": self.watermark,
            "m": self.max_ts,
            "i": self.last_ingest,
            "p": [[start, self.panes[start].to_state()] for start in sorted(self.panes)],
            "o": [None if o is None else [o[0], o[1].to_state()] for o in self.open],
        }

    @classmethod
    def from_state(cls, spec: WindowSpec, state: dict[str, Any]) -> TopicWindows:
        """ValueError if the state is malformed or was made for another WindowSpec."""
        if state.get("f") != spec.fingerprint():
            raise ValueError("window sizes or lateness changed since the checkpoint")
        new = cls(spec)
        new.watermark = int(state["w"])
        new.max_ts = int(state["m"])
        new.last_ingest = int(state["i"])
        for start, aggregate in state["p"]:
            if int(start) % spec.pane:
                raise ValueError("pane start not aligned")
            new.panes[int(start)] = Aggregate.from_state(aggregate)
        opened = state["o"]
        if len(opened) != len(new.open):
            raise ValueError("wrong number of open windows")
        new.open = [None if o is None else (int(o[0]), Aggregate.from_state(o[1])) for o in opened]
        ends = [s + spec.pane for s in new.panes]
        ends += [o[0] + size for o, size in zip(new.open, spec.sizes[1:], strict=True) if o]
        new._next_close = min(ends, default=FOREVER)
        return new
