"""The search for a server's maximum sustained rate, pure: step the rate up geometrically
until a step fails (p99 over the limit or too much loss), then bisect between the last
good and the first bad rate a few times."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepVerdict:
    rate: float
    ok: bool


@dataclass
class RateSearch:
    """Propose rates with `next_rate()`, report each outcome with `record()`.

    `best` is the highest rate that passed (0 if none did).
    """

    start: float
    factor: float = 2.0
    refinements: int = 2
    ceiling: float = math.inf
    floor: float = 1.0
    history: list[StepVerdict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.start <= 0 or self.factor <= 1 or self.refinements < 0:
            raise ValueError("start must be > 0, factor > 1, refinements >= 0")

    @property
    def best(self) -> float:
        return max((s.rate for s in self.history if s.ok), default=0.0)

    @property
    def _lowest_bad(self) -> float:
        return min((s.rate for s in self.history if not s.ok), default=math.inf)

    def next_rate(self) -> float | None:
        """The next rate to try, or None when the search is over."""
        if not self.history:
            return min(self.start, self.ceiling)
        good, bad = self.best, self._lowest_bad
        if math.isinf(bad):  # still climbing
            if good >= self.ceiling:
                return None
            return min(good * self.factor, self.ceiling)
        if good == 0:  # even the first step failed: come down
            lower = bad / self.factor
            return lower if lower >= self.floor else None
        if self._steps_since_bracketed() >= self.refinements:
            return None
        return math.sqrt(good * bad)

    def _steps_since_bracketed(self) -> int:
        """Steps taken since the history first held both a good and a bad rate."""
        seen_ok = seen_bad = False
        for i, step in enumerate(self.history):
            seen_ok = seen_ok or step.ok
            seen_bad = seen_bad or not step.ok
            if seen_ok and seen_bad:
                return len(self.history) - i - 1
        return 0

    def record(self, rate: float, ok: bool) -> None:
        self.history.append(StepVerdict(rate, ok))
