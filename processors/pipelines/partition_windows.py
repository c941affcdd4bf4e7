"""The window aggregator of one ingest partition: outputs, their ids, checkpoints (pure).

The worker owns one `Aggregator` per partition it holds a lease on. It feeds it the
`WindowFeed`s of each entry's plan (`processors/pipelines/plan.py`), calls `advance` from a
timer, writes the `TopicEvent`s it returns, and checkpoints it. No I/O here; this
docstring is the contract for the worker integration.

## Ids of derived topics

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from processors.pipelines.plan import Pipelines, WindowFeed
from processors.pipelines.transform import IngestEvent, TopicEvent
from processors.pipelines.windows import ClosedWindow, TopicWindows

OFFSET_FIELD = "offset"
ROUTED_FIELD = "routed"
SEPARATOR = "|"  # neither pipeline names nor topics contain it
EVICT_AFTER_MS = 3_600_000  # an idle topic's watermark is forgotten after an hour


def state_field(pipeline: str, topic: str) -> str:
    return f"{pipeline}{SEPARATOR}{topic}"


def window_event(output: str, closed: ClosedWindow) -> TopicEvent:
    data: dict[str, Any] = {"window_start": closed.start, "window_end": closed.end}
    data.update(closed.aggregate.summary())
    return TopicEvent(topic=output, id=f"{closed.end}-0", ts=closed.start, data=data)


@dataclass(frozen=True)
class Checkpoint:
    fields: dict[str, bytes]
    removed: list[str]


@dataclass
class Restored:
    offset: str | None = None  # window state includes the entries up to here
    routed: str | None = None  # routed copies are written for the entries up to here
    restored: int = 0
    discarded: list[tuple[str, str]] = field(default_factory=list)  # (field, why)


class Aggregator:
    """Window state of every (pipeline, source topic) in one partition."""

    def __init__(self, pipelines: Pipelines) -> None:
        self.pipelines = pipelines
        self._states: dict[tuple[str, str], TopicWindows] = {}
        self._outputs: dict[tuple[str, str], tuple[str, ...]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._removed: set[tuple[str, str]] = set()
        self._late: dict[str, int] = {}
        self._closed: list[ClosedWindow] = []  # reused by feed: no list per event

    def __len__(self) -> int:
        return len(self._states)

    def feed(
        self, feed: WindowFeed, event: IngestEvent, at: tuple[int, int] | None = None
    ) -> list[TopicEvent]:
        """Add one value; returns the window outputs this closed (usually none). `at`:
        the event's ingest id, parsed, when the caller has it."""
        key = (feed.pipeline, event.topic)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = TopicWindows(feed.spec)
            self._outputs[key] = feed.outputs
            self._removed.discard(key)
        self._dirty.add(key)
        if at is None:
            ms, _, seq = event.id.partition("-")
            at = (int(ms), int(seq or 0))
        closed = self._closed
        if not state.add(feed.value, event.ts, at[0], at[1], closed):
            self._late[feed.pipeline] = self._late.get(feed.pipeline, 0) + 1
        if not closed:
            return []
        events = self._events(key, closed)
        closed.clear()
        return events

    def advance(self, clock_ms: int) -> list[TopicEvent]:
        """The timer (see the module docstring for which `clock_ms` is valid)."""
        out: list[TopicEvent] = []
        evict: list[tuple[str, str]] = []
        for key, state in self._states.items():
            closed: list[ClosedWindow] = []
            state.advance(clock_ms, closed)
            if closed:
                self._dirty.add(key)
                out.extend(self._events(key, closed))
            if state.empty and clock_ms - state.last_ingest >= EVICT_AFTER_MS:
                evict.append(key)
        for key in evict:
            del self._states[key]
            del self._outputs[key]
            self._dirty.discard(key)
            self._removed.add(key)
        return out

    def _events(self, key: tuple[str, str], closed: list[ClosedWindow]) -> list[TopicEvent]:
        outputs = self._outputs[key]
        sizes = self._states[key].spec.sizes
        return [window_event(outputs[sizes.index(c.size)], c) for c in closed]

    def drain_late(self) -> dict[str, int]:
        """Late events per pipeline since the last call (for a metric counter)."""
        late, self._late = self._late, {}
        return late

    def checkpoint(self, offset: str) -> Checkpoint:
        """What to HSET (changed states and the offset) and HDEL; marks all clean."""
        fields = {
            state_field(*key): orjson.dumps(self._states[key].to_state()) for key in self._dirty
        }
        fields[OFFSET_FIELD] = offset.encode()
        removed = [state_field(*key) for key in self._removed]
        self._dirty.clear()
        self._removed.clear()
        return Checkpoint(fields=fields, removed=removed)

    def restore(self, fields: Mapping[bytes | str, bytes | str]) -> Restored:
        """Load a checkpoint (HGETALL). States that no longer fit the pipelines (removed,
        changed sizes or lateness, topic no longer matched) are dropped and reported;
        they are deleted at the next checkpoint."""
        self._states.clear()
        self._outputs.clear()
        self._dirty.clear()
        self._removed.clear()
        result = Restored()
        for raw_name, raw_value in fields.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
            if name in (OFFSET_FIELD, ROUTED_FIELD):
                value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
                if name == OFFSET_FIELD:
                    result.offset = value
                else:
                    result.routed = value
                continue
            pipeline, _, topic = name.partition(SEPARATOR)
            key = (pipeline, topic)
            why = self._restore_one(key, raw_value)
            if why is None:
                result.restored += 1
            else:
                result.discarded.append((name, why))
                self._removed.add(key)
        return result

    def _restore_one(self, key: tuple[str, str], raw: bytes | str) -> str | None:
        spec = self.pipelines.spec(key[0])
        outputs = self.pipelines.window_outputs(*key)
        if spec is None or outputs is None:
            return "pipeline no longer aggregates this topic"
        try:
            state = TopicWindows.from_state(spec, orjson.loads(raw))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return f"unusable state: {exc}"
        self._states[key] = state
        self._outputs[key] = outputs
        return None
