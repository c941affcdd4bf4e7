"""How long each topic's history is kept (pure): the `retention` rules of the pipelines
file, the global default (`REALTIME_HISTORY_RETENTION_MS`) and the count cap
(`REALTIME_HISTORY_MAXLEN`), resolved per topic.

The worker trims a topic's history by time on each write (`XTRIM MINID ~`, the newest
written id's time minus `keep`), so memory follows time, not a count that means a minute
on a busy topic and a year on a quiet one; the count cap stays as a safety bound.
Design notes: docs/pipelines.md#retention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from processors.pipelines.globs import glob_pattern

DAY_MS = 86_400_000
MAX_EVENTS = 10_000_000  # the largest count cap a rule may set


@dataclass(frozen=True)
class RetentionRule:
    """Topics matching one of `match` keep `keep_ms` of history (0: no time limit) and
    at most about `max_events` events (0: `REALTIME_HISTORY_MAXLEN`)."""

    match: tuple[str, ...]
    keep_ms: int
    max_events: int = 0
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", glob_pattern(self.match))

    def matches(self, topic: str) -> bool:
        return self._regex.match(topic) is not None


# Without a `retention` section: the default tiers (`{topic}:1s`, `:10s`, `:1m`) keep an
# hour, a day and 30 days; 30 days of `1m` is 43,200 events, above the default cap.
DEFAULT_RETENTION = (
    RetentionRule(("*:1s",), 3_600_000),
    RetentionRule(("*:10s",), DAY_MS),
    RetentionRule(("*:1m",), 30 * DAY_MS, 50_000),
)


class Retention:
    """Rules in order, the first match wins; other topics keep `default_keep_ms`."""

    def __init__(
        self, rules: tuple[RetentionRule, ...] = (), default_keep_ms: int = 0, maxlen: int = 0
    ) -> None:
        self.rules = rules
        self.default_keep_ms = default_keep_ms
        self.maxlen = maxlen  # the global cap; 0: the writer's own
        self._memo: dict[str, tuple[int, int]] = {}

    def of(self, topic: str) -> tuple[int, int]:
        """(keep in ms, 0 for no time limit; count cap, 0 for the global one)."""
        found = self._memo.get(topic)
        if found is None:
            found = (self.default_keep_ms, 0)
            for rule in self.rules:
                if rule.matches(topic):
                    found = (rule.keep_ms, rule.max_events)
                    break
            if len(self._memo) >= 100_000:  # topics with ids in their names: stay bounded
                self._memo.clear()
            self._memo[topic] = found
        return found

    def keep_ms(self, topic: str) -> int:
        return self.of(topic)[0]


def trim_below(event_id: str, keep_ms: int) -> str:
    """The MINID a write of `event_id` trims its topic to ('' for none): entries older
    than `keep_ms` before it. Relative to the newest event, not a clock, so the newest
    entry always stays and a replayed commit trims exactly as the first one did."""
    if keep_ms <= 0:
        return ""
    ms = int(event_id.partition("-")[0])
    return str(ms - keep_ms) if ms > keep_ms else ""
