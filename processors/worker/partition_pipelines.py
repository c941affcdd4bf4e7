"""The pipelines of one partition: what each batch's commit writes, and when it acks.

The partition runner (`processors/worker/partition.py`) plans each entry with the configured
pipelines (`processors/pipelines/plan.py`) and hands the batch here; `build` turns it into the
batch's lease-fenced commit (`processors/worker/fencing.py`): pass-through events and window
outputs (history + publish), routed copies (XADDs to their target topic's ingest
stream), the window checkpoint `rt:windows:{p}`, dead letters and acks. The contract
is in the design notes of `processors/pipelines/partition_windows.py`.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orjson import Fragment

from processors.pipelines.partition_windows import ROUTED_FIELD, Aggregator
from processors.pipelines.plan import PASS_THROUGH, Pipelines, Plan, hops_of
from processors.pipelines.retention import Retention
from processors.pipelines.transform import IngestEvent, TopicEvent
from processors.worker.dead_letters import dead_letter_record
from processors.worker.fencing import CommitPlan, Entry, Fields, Value
from processors.worker.history_writes import NO_RETENTION, HistoryTargets
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.streamids import parse_id
from realtime.core.text import text
from realtime.core.topics import partition_of
from realtime.core.wire import UpdatesEncoder

logger = logging.getLogger(__name__)

Planner = Callable[[IngestEvent, int], Plan]

ADVANCE_S = 0.2  # how often the timer closes idle topics' windows, at most
NO_ID = (0, 0)


@dataclass(slots=True)  # one per entry
class Outcome:
    """What one attempt made of one entry: a plan to commit, or a reason to dead-letter
    it, or a failure to retry."""

    entry: Entry
    event: IngestEvent | None = None
    plan: Plan | None = None
    dead: str | None = None
    attempts: int = 1
    failed: str | None = None


@dataclass
class Batch:
    """One commit, and what to remember once it succeeded."""

    plan: CommitPlan
    sources: list[int]  # per history write: the index of its outcome (-1: the timer)
    outputs: set[int]  # the history writes that are window outputs
    dead_outputs: list[tuple[str, str]]  # (history key, id) of those dead-lettered
    fed: bool  # the window state changed: a failed commit makes it stale
    offset: tuple[int, int]
    routed: tuple[int, int]
    pending: list[str]  # entries fed, not checkpointed: acknowledged at a later checkpoint
    checkpointed: bool
    now: float = 0.0  # monotonic time it was built at


@dataclass
class PartitionPipelines:
    pipelines: Pipelines
    keys: Keys
    partitions: int
    planner: Planner | None = None
    checkpoint_s: float = 1.0  # how often window state is saved (and its entries acked)
    retention: Retention = NO_RETENTION  # how long each topic's history is kept
    stale: bool = True  # restore from Redis before use
    offset: tuple[int, int] = NO_ID
    routed: tuple[int, int] = NO_ID
    late: Counter[str] = field(default_factory=Counter)
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)
    _unsaved: list[str] = field(default_factory=list)
    # Window outputs to dead-letter when they are made again: (history key, id) -> error.
    _dead_outputs: dict[tuple[str, str], str] = field(default_factory=dict)
    _dirty: bool = False  # window state changed since the last checkpoint
    _aggregator: Aggregator | None = None
    _last_checkpoint: float = 0.0  # monotonic; set by `restore`, which comes first
    _last_advance: float = 0.0
    _targets: HistoryTargets | None = None

    @property
    def targets(self) -> HistoryTargets:
        if self._targets is None:
            self._targets = HistoryTargets(self.keys, self.retention)
        return self._targets

    @property
    def aggregator(self) -> Aggregator:
        if self._aggregator is None:
            self._aggregator = Aggregator(self.pipelines)
        return self._aggregator

    @property
    def open_windows(self) -> bool:
        """Some topic has window state (the timer has work to do)."""
        return len(self.aggregator) > 0

    @property
    def unsaved(self) -> bool:
        """Something a checkpoint would save."""
        return bool(self._unsaved) or self._dirty

    def plan(self, event: IngestEvent, hops: int) -> Plan:
        if self.planner is not None:
            return self.planner(event, hops)
        return self.pipelines.plan(event, hops)

    def plan_entry(self, event: IngestEvent, fields: Fields) -> Plan:
        """`plan` for the event of an entry with `fields`; PASS_THROUGH for an event that
        only passes through (`build` writes the event itself)."""
        if self.planner is None:
            return self.pipelines.plan_entry(event, fields)
        return self.planner(event, hops_of(fields))

    def restore(self, fields: Mapping[bytes | str, bytes | str], *, now: float) -> None:
        """Load the checkpoint (HGETALL of `rt:windows:{p}`) at monotonic time `now`;
        pending entries are then replayed by the runner's recovery."""
        self._aggregator = Aggregator(self.pipelines)
        restored = self._aggregator.restore(fields)
        self.offset = parse_id(restored.offset) if restored.offset else NO_ID
        self.routed = parse_id(restored.routed) if restored.routed else NO_ID
        self._unsaved = []
        self._dirty = False
        self.stale = False
        self._last_checkpoint = now
        for name, why in restored.discarded:
            logger.warning("window state %s dropped: %s", name, why)
        if restored.restored:
            logger.info("restored %d window state(s) up to %s", restored.restored, restored.offset)

    def build(
        self,
        stream: str,
        outcomes: Sequence[Outcome],
        encoder: UpdatesEncoder,
        *,
        now: float,
        clock_ms: int | None = None,
        checkpoint: bool = False,
    ) -> Batch:
        """The commit for `outcomes` (none failed), at monotonic time `now`. `clock_ms`:
        the timer may close idle windows (a valid clock, see
        pipelines/partition_windows.py); `checkpoint`: save now. No I/O and no clock of
        its own: the result depends only on the arguments and the stage's state, which
        the commit's outcome updates (`committed`, `failed`)."""
        batch = _Building(self, stream, now)
        for index, outcome in enumerate(outcomes):
            batch.entry(index, outcome)
        # At most every ADVANCE_S (it visits every topic), and always before a checkpoint.
        aggregator = self.aggregator
        advance = checkpoint or now - self._last_advance >= ADVANCE_S
        if clock_ms is not None and advance and len(aggregator):
            self._last_advance = now
            closed = aggregator.advance(clock_ms)
            if closed:
                batch.fed = True
                batch.emit(closed, -1)
        batch.checkpoint(forced=checkpoint)
        for pipeline, count in aggregator.drain_late().items():
            self.late[pipeline] += count
            logger.info(
                "%s: %d late event(s) for pipeline %s (beyond its lateness: counted, not merged)",
                stream,
                count,
                pipeline,
            )
        return batch.done(encoder)

    def committed(self, batch: Batch) -> None:
        """`batch` is in Redis."""
        self.offset, self.routed = batch.offset, batch.routed
        if batch.checkpointed:
            self._unsaved = []
            self._dirty = False
            self._last_checkpoint = batch.now
        elif batch.fed:
            self._dirty = True
        self._unsaved += batch.pending
        for key in batch.dead_outputs:
            self._dead_outputs.pop(key, None)

    def failed(self, batch: Batch) -> None:
        """`batch` was not (entirely) committed."""
        if batch.fed or batch.checkpointed:
            self.stale = True

    def dead_output(self, batch: Batch, index: int, error: str) -> str | None:
        """History write `index` of the failed `batch` could not be written (`error`:
        its key holds another type). A window output: it is dead-lettered when the
        replay makes it again; returns the dead letter's error. Else None."""
        if index not in batch.outputs:
            return None
        write = batch.plan.history[index]
        reason = f"window output {write.id}: cannot write history key {write.key}: {error}"
        self._dead_outputs[(write.key, write.id)] = reason
        return reason

    @staticmethod
    def _dead_window(stream: str, event: TopicEvent, error: str) -> list[Value]:
        """A window output's dead letter: its event as an entry's fields would hold it."""
        fields: dict[bytes | str, bytes | str] = {
            "topic": event.topic,
            "ts": str(event.ts),
            "data": jsoncodec.dumps(event.data),
        }
        return dead_letter_record(stream, event.id, fields, error, 1)

    @staticmethod
    def _dead_letter(stream: str, outcome: Outcome) -> list[Value]:
        return dead_letter_record(
            stream, outcome.entry.id, outcome.entry.fields, outcome.dead or "", outcome.attempts
        )


class _Building:
    """One `build` in progress: the commit plan and what it will remember."""

    def __init__(self, stage: PartitionPipelines, stream: str, now: float) -> None:
        self.stage = stage
        self.stream = stream
        self.now = now
        self.plan = CommitPlan()
        self.sources: list[int] = []
        self.outputs: set[int] = set()
        self.dead_outputs: list[tuple[str, str]] = []
        # The publishes: each topic's events as clients receive them, topics in
        # first-seen order, events in their order.
        self.updates: dict[str, list[dict[str, Any]]] = {}
        self.write = stage.targets.write
        self.offset, self.routed = stage.offset, stage.routed
        self.last_offset_id = ""
        self.last_routed_id = ""
        self.pending: list[str] = []
        self.fed = False
        self.checkpointed = False

    def emit(self, new: list[TopicEvent], source: int, *, output: bool = True) -> None:
        """History writes (and publishes) for `new`; a window output known to fail is
        dead-lettered instead."""
        stage, plan = self.stage, self.plan
        for event in new:
            write = self.write(event.topic, event.id, event.ts, event.data)
            if output:
                error = stage._dead_outputs.get((write.key, write.id))
                if error is not None:
                    plan.dead_letters.append(stage._dead_window(self.stream, event, error))
                    self.dead_outputs.append((write.key, write.id))
                    continue
                self.outputs.add(len(plan.history))
            plan.history.append(write)
            self.sources.append(source)
            self._update(event.topic, event.to_wire())

    def _pass(self, event: IngestEvent | TopicEvent, index: int) -> None:
        """A pass-through event's history write and publish (the per-event path: what
        `emit` and `_update` do, inlined)."""
        topic, event_id, ts, data, raw = event.topic, event.id, event.ts, event.data, event.raw
        self.plan.history.append(self.write(topic, event_id, ts, data, raw))
        self.sources.append(index)
        # The entry's JSON as it is, not `data` encoded again (see IngestEvent.raw).
        wire = {"topic": topic, "id": event_id, "ts": ts, "data": Fragment(raw) if raw else data}
        events = self.updates.get(topic)
        if events is None:
            self.updates[topic] = [wire]
        else:
            events.append(wire)

    def _update(self, topic: str, event: dict[str, Any]) -> None:
        events = self.updates.get(topic)
        if events is None:
            self.updates[topic] = [event]
        else:
            events.append(event)

    def entry(self, index: int, outcome: Outcome) -> None:
        stage, plan, entry = self.stage, self.plan, outcome.entry
        if outcome.dead is not None or outcome.plan is None or outcome.event is None:
            plan.dead_letters.append(stage._dead_letter(self.stream, outcome))
            plan.acks.append(entry.id)
            return
        result, event = outcome.plan, outcome.event
        if result is PASS_THROUGH:  # the common case, inlined: see PASS_THROUGH
            self._pass(event, index)
            plan.acks.append(entry.id)
            return
        if result.passthrough is not None:
            self._pass(result.passthrough, index)
        # Parsed only when compared (pass-through needs neither comparison). An entry
        # id from Redis is always well formed: no validation on this per-event path.
        entry_id = NO_ID
        if result.feeds or result.routed:
            ms, _, seq = entry.id.partition("-")
            entry_id = (int(ms), int(seq))
        fed_this = False
        if result.feeds and entry_id > self.offset:  # else the checkpoint holds them
            feed_one = stage.aggregator.feed
            for feed in result.feeds:
                closed = feed_one(feed, event, entry_id)
                if closed:
                    self.emit(closed, index)
            self.offset, self.last_offset_id, fed_this = entry_id, entry.id, True
        if result.routed and entry_id > self.routed:  # else they were written already
            for copy in result.routed:
                target = stage.keys.ingest(partition_of(copy.topic, stage.partitions))
                flat: list[str] = []
                for name, value in copy.ingest_fields().items():
                    flat += [name, text(value)]
                plan.routed.append((target, flat))
            self.routed, self.last_routed_id = entry_id, entry.id
        for skip in result.skipped:
            stage.skipped[(skip.pipeline, skip.reason)] += 1
        if fed_this:
            self.fed = True
            self.pending.append(entry.id)
        else:
            plan.acks.append(entry.id)

    def checkpoint(self, *, forced: bool) -> None:
        """Save the window state (and ack the entries it holds) when due, forced, or a
        window output is dead-lettered."""
        stage, plan = self.stage, self.plan
        if self.last_routed_id:
            plan.checkpoint += [ROUTED_FIELD, self.last_routed_id]
        unsaved = stage._dirty or stage._unsaved or self.pending or self.fed
        due = self.now - stage._last_checkpoint >= stage.checkpoint_s
        if not (unsaved and (forced or due or self.dead_outputs)):
            return
        offset_id = self.last_offset_id or f"{self.offset[0]}-{self.offset[1]}"
        saved = stage.aggregator.checkpoint(offset_id)
        for name, value in saved.fields.items():
            plan.checkpoint += [name, value.decode()]
        plan.removed = saved.removed
        plan.acks += stage._unsaved
        plan.acks += self.pending
        self.pending = []
        self.checkpointed = True

    def done(self, encoder: UpdatesEncoder) -> Batch:
        self.plan.publishes = encoder.encode_updates(list(self.updates.items()))
        return Batch(
            self.plan,
            self.sources,
            self.outputs,
            self.dead_outputs,
            self.fed,
            self.offset,
            self.routed,
            self.pending,
            self.checkpointed,
            self.now,
        )
