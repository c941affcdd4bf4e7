"""Presence bookkeeping, pure (no I/O): this instance's viewers per topic and what Redis
has not been told yet, the sum over live instances, and the throttle that lets at most
one `presence` event per topic out per interval.

A topic's viewer count is the sum, over the live web instances, of each instance's local
count (Socket.IO subscriptions plus SSE readers of the topic); `presence.py` does the I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any


class LocalViewers:
    """This instance's viewers per topic, and the topics changed since the last flush."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.dirty: set[str] = set()
        self._total = 0

    def set(self, topic: str, count: int) -> bool:
        """The topic has `count` local viewers now; True if that changed."""
        before = self.counts.get(topic, 0)
        if count == before:
            return False
        if count > 0:
            self.counts[topic] = count
        else:
            self.counts.pop(topic, None)
        self._total += count - before
        self.dirty.add(topic)
        return True

    def get(self, topic: str) -> int:
        return self.counts.get(topic, 0)

    def total(self) -> int:
        return self._total

    def take(self) -> dict[str, int]:
        """The changed topics and their counts now (0: no local viewer left); forgotten
        as changed, so call `restore` if they could not be written."""
        taken = {topic: self.counts.get(topic, 0) for topic in self.dirty}
        self.dirty = set()
        return taken

    def restore(self, topics: Iterable[str]) -> None:
        """A flush failed: its topics are written with the next one (at their count then)."""
        self.dirty.update(topics)

    def mark_all(self) -> None:
        """Write every topic again (this instance was taken for dead and reaped)."""
        self.dirty.update(self.counts)


class LocalMembers:
    """This instance's viewers per topic by their token's `sub`, and the (topic, sub)
    pairs changed since the last flush (viewers without a `sub` are counted only)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}  # topic -> sub -> viewers
        self.dirty: set[tuple[str, str]] = set()

    def add(self, topic: str, sub: str, delta: int) -> None:
        subs = self.counts.setdefault(topic, {})
        count = subs.get(sub, 0) + delta
        if count > 0:
            subs[sub] = count
        else:
            subs.pop(sub, None)
            if not subs:
                del self.counts[topic]
        self.dirty.add((topic, sub))

    def of(self, topic: str) -> dict[str, int]:
        return self.counts.get(topic, {})

    def take(self) -> dict[tuple[str, str], int]:
        taken = {(t, s): self.counts.get(t, {}).get(s, 0) for t, s in self.dirty}
        self.dirty = set()
        return taken

    def restore(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.dirty.update(pairs)

    def mark_all(self) -> None:
        self.dirty.update((t, s) for t, subs in self.counts.items() for s in subs)


def merge_members(parts: Iterable[Mapping[str, int]], limit: int) -> tuple[list[str], bool]:
    """The `sub`s with a viewer in any part, sorted, at most `limit`; True if more."""
    subs = sorted({sub for part in parts for sub, n in part.items() if n > 0})
    return subs[:limit], len(subs) > limit


def total(
    fields: Mapping[str, int], live: Container[str], me: str | None = None, local: int = 0
) -> int:
    """A topic's viewers: the fields (instance -> count) of live instances, this
    instance's own field (`me`) replaced by its exact `local` count."""
    return local + sum(n for instance, n in fields.items() if instance != me and instance in live)


def parse_fields(raw: Mapping[Any, Any]) -> dict[str, int]:
    """A presence hash as Redis returns it (bytes): malformed fields are skipped."""
    out: dict[str, int] = {}
    for key, value in raw.items():
        try:
            count = int(value)
        except (TypeError, ValueError):
            continue
        name = key.decode() if isinstance(key, bytes) else str(key)
        if count > 0:
            out[name] = count
    return out


class Throttle:
    """At most one emission per topic per `interval_s`: a change after a quiet interval
    goes out at once; changes within it are coalesced into one at its end."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}  # topic -> when it was last emitted
        self._due: dict[str, float] = {}  # topic -> when its pending emission goes out

    def touch(self, topic: str, now: float) -> None:
        """The topic's count may have changed at `now`."""
        if topic in self._due:
            return
        last = self._last.get(topic)
        self._due[topic] = now if last is None else max(now, last + self.interval_s)

    def pop_due(self, now: float) -> list[str]:
        """The topics due by `now`, recorded as emitted at `now`."""
        due = [topic for topic, at in self._due.items() if at <= now]
        for topic in due:
            del self._due[topic]
            self._last[topic] = now
        return due

    def forget(self, topic: str) -> None:
        """Nobody here watches the topic any more."""
        self._due.pop(topic, None)
        self._last.pop(topic, None)

    def pending(self) -> int:
        return len(self._due)

    def expire(self, now: float) -> None:
        """Drop the emission times older than an interval: they no longer hold anything
        back (keeps memory to the topics active within the last interval)."""
        stale = [t for t, at in self._last.items() if at + self.interval_s <= now]
        for topic in stale:
            del self._last[topic]
