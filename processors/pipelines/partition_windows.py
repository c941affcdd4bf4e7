"""The window aggregator of one ingest partition: outputs, their ids, checkpoints (pure).

The worker owns one `Aggregator` per partition it holds a lease on. It feeds it the
`WindowFeed`s of each entry's plan (`processors/pipelines/plan.py`), calls `advance` from a
timer, writes the `TopicEvent`s it returns, and checkpoints it. No I/O here; this
docstring is the contract for the worker integration.

## Ids of derived topics

Topic event ids must increase per topic (they are `rt:topic:{topic}` stream ids, written
explicitly so that a redelivery is refused as a duplicate). So:

1. Pass-through events keep the ingest entry id (`processors/pipelines/transform.py`).
2. A window output on `{topic}:{window}` gets id `"{window_end}-0"` and ts = window_start.
   A source topic lives in exactly one partition and the windows of one size close in
   increasing end order, each exactly once (events for a closed window are late), so
   these ids increase per output topic. A replay after a crash recomputes the same
   window with the same id and content (see "Determinism" in processors/pipelines/windows.py),
   which history refuses as a duplicate. Nobody else may write these topics: ingest
   must refuse them (`Pipelines.derived_from`) and routes cannot target them.
3. Routed events are never written to their target topic by the source's worker: the
   target may receive from several source topics in several partitions, whose ingest
   ids are not ordered with respect to each other. They are appended to the target's
   own ingest stream (`rt:ingest:{partition_of(target)}`, auto id, `RoutedEvent.
   ingest_fields()` with hops + 1) and come back as ordinary entries of the target:
   pass-through id = that ingest id; the target's windows live in its own partition.
   Exactly once: those XADDs go in the same lease-fenced commit that sets the field
   `routed` = the last source entry id they cover; entries at or below it are not
   routed again.

## Checkpoint (per partition, a hash: add `Keys.windows(p)` -> `rt:windows:{p}`)

- field `offset` (OFFSET_FIELD): the last ingest entry id fed into the saved window
  state;
- field `routed` (ROUTED_FIELD): the last ingest entry id whose routed copies are
  written;
- field `{pipeline}|{topic}`: that `TopicWindows` state (compact JSON, see
  `TopicWindows.to_state`), written only when it changed since the last checkpoint.
  A field not rewritten is still exact: nothing touched that topic since.

Per batch of entries of partition p, the partition runner (processors/worker/partition.py)
does, in its one lease-fenced commit script per batch (processors/worker/fencing.py), which
the integration extends with the routed XADDs and the HSET/HDEL:
1. plans each entry; feeds its windows (`feed`) only if its id > `offset`, keeps its
   routed copies only if its id > `routed` (pass-through is idempotent: always redo);
2. commits: history writes for pass-through events and window outputs (explicit ids,
   "equal or smaller" skipped as today), publishes, dead letters, the routed copies'
   XADDs, and HSET `routed` = the batch's last id;
3. acknowledges entries only in a commit that also checkpoints them: HSET
   `checkpoint(last fed id).fields`, HDEL `.removed`, XACK every entry up to that
   offset. Simplest: do it in every batch's commit. Cheaper at high rates: about once
   a second (and before giving the lease up), leaving entries pending in between, since
   a checkpoint serialises every changed topic's state and per-batch checkpoints cost
   more than the aggregation itself (bench/aggregate.py).
Because acks and checkpoints commit together under the lease, "pending" means "not in
the checkpoint": a new owner restores the checkpoint and feeds every claimed pending
entry; the windows come out identical (see "Determinism" in processors/pipelines/windows.py),
history refuses the repeated ids, and `routed` keeps copies from being sent twice.

The timer: `advance(T)` closes windows of idle topics. T must be an ingest-clock time
such that every entry of this partition with an id ms below T has been fed: e.g. have
the fenced read script call `TIME` before its XREADGROUP and return it; when that read
returned fewer entries than COUNT (and the claimed pending entries of a previous owner
are done), call `advance(T)` after feeding them. Outputs are committed like step 2.
With that rule, what each window contains does not depend on when the timer ran, so a
new owner that restores the checkpoint and replays the partition's pending
entries produces exactly what the old one would have. On takeover: HGETALL
`rt:windows:{p}` -> `restore`, which returns both offsets. Changing
REALTIME_PARTITIONS moves topics between partitions and strands their window state:
drain first.
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

    def feed(self, feed: WindowFeed, event: IngestEvent) -> list[TopicEvent]:
        """Add one value; returns the window outputs this closed (usually none)."""
        key = (feed.pipeline, event.topic)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = TopicWindows(feed.spec)
            self._outputs[key] = feed.outputs
            self._removed.discard(key)
        self._dirty.add(key)
        ms, _, seq = event.id.partition("-")
        closed = self._closed
        if not state.add(feed.value, event.ts, int(ms), int(seq or 0), closed):
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
