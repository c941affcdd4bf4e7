"""Subscriber-chosen resolution: one client's stream of one topic, merged down to at most
`max_rate` events per second (pure; the web instance's last step before `update`).

`subscribe {"topic", "max_rate": hz}` gives the subscription a `Conflater`. Nothing is
dropped: every event the client did not get on its own is folded into the next event
it gets, so a slow screen still shows correct counts and totals (Lightstreamer, Ably and
Centrifugo keep only the latest value).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from realtime.core.topics import MAX_RATE_HZ, MIN_RATE_HZ

DEFAULT_FIELD = "value"


def _id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def _numeric(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class Merged:
    """The running merge of events not yet sent."""

    __slots__ = (
        "count",
        "first_id",
        "first_ts",
        "last",
        "last_id",
        "last_ts",
        "latest",
        "max",
        "min",
        "sum",
        "values",
    )

    def __init__(self, event: Mapping[str, Any], value: float | None) -> None:
        self.count = 1
        self.first_id: str = event["id"]
        self.first_ts: int = event["ts"]
        self.last_id: str = event["id"]
        self.last_ts: int = event["ts"]
        self.latest: Any = event["data"]
        self.values = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.last: float | None = None
        self._value(value)

    def _value(self, value: float | None) -> None:
        if value is None:
            return
        self.values += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.last = value

    def add(self, event: Mapping[str, Any], value: float | None) -> None:
        self.count += 1
        self.last_id = event["id"]
        self.last_ts = event["ts"]
        self.latest = event["data"]
        self._value(value)

    def to_event(self, topic: str) -> dict[str, Any]:
        numeric = self.values > 0
        return {
            "topic": topic,
            "id": self.last_id,
            "ts": self.last_ts,
            "data": {
                "count": self.count,
                "first_id": self.first_id,
                "first_ts": self.first_ts,
                "values": self.values,
                "sum": self.sum if numeric else None,
                "min": self.min if numeric else None,
                "max": self.max if numeric else None,
                "last": self.last,
                "latest": self.latest,
            },
        }


class Conflater:
    """One subscription's pacing and merge state."""

    __slots__ = ("_last_key", "_last_sent", "_path", "_pending", "interval", "max_rate", "topic")

    def __init__(self, topic: str, max_rate: float, field: str = DEFAULT_FIELD) -> None:
        if not MIN_RATE_HZ <= max_rate <= MAX_RATE_HZ:
            raise ValueError(f"max_rate must be between {MIN_RATE_HZ} and {MAX_RATE_HZ} Hz")
        self.topic = topic
        self.max_rate = max_rate
        self.interval = 1.0 / max_rate
        self._path = tuple(field.split("."))
        self._pending: Merged | None = None
        self._last_sent: float | None = None
        self._last_key: tuple[int, int] | None = None

    def _value(self, data: Any) -> float | None:
        for part in self._path:
            if not isinstance(data, dict):
                return None
            data = data.get(part)
        return _numeric(data)

    def offer(self, event: Mapping[str, Any], now: float) -> list[dict[str, Any]]:
        """Take one topic event (`{topic, id, ts, data}`); returns what to send now."""
        key = _id_key(event["id"])
        if self._last_key is not None and key <= self._last_key:
            return []
        self._last_key = key
        value = self._value(event["data"])
        if self._pending is None:
            self._pending = Merged(event, value)
        else:
            self._pending.add(event, value)
        return self.flush(now)

    def due(self) -> float | None:
        """When the pending merge may be sent (a `now` value), or None if nothing waits."""
        if self._pending is None:
            return None
        return 0.0 if self._last_sent is None else self._last_sent + self.interval

    def flush(self, now: float) -> list[dict[str, Any]]:
        """The timer: the pending merge if it is due, else nothing."""
        when = self.due()
        if when is None or now < when:
            return []
        pending = self._pending
        assert pending is not None
        self._pending = None
        self._last_sent = now
        return [pending.to_event(self.topic)]

    @property
    def pending(self) -> int:
        """Events merged but not yet sent."""
        return 0 if self._pending is None else self._pending.count
