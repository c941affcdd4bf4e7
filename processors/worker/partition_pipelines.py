"""The pipelines of one partition: what each batch's commit writes, and when it acks.

The partition runner (`processors/worker/partition.py`) plans each entry with the configured
pipelines (`processors/pipelines/plan.py`) and hands the batch here; `build` turns it into the
batch's lease-fenced commit (`processors/worker/fencing.py`): pass-through events and window
outputs (history + publish), routed copies (XADDs to their target topic's ingest
stream), the window checkpoint `rt:windows:{p}`, dead letters and acks. The contract
is the docstring of `processors/pipelines/partition_windows.py`; in short:

- an entry's window values are fed only if its id is above `offset` (the checkpoint
  holds them otherwise), its routed copies written only if above `routed`;
- an entry that fed the windows is acknowledged only in a commit that checkpoints them
  (every `REALTIME_CHECKPOINT_MS`, every batch while recovering, and before the lease is given
  up); in between it stays pending, so a new owner restores the checkpoint and replays
  exactly what it lacks. Every other entry is acknowledged at once;
- any commit that failed after windows were fed leaves the in-memory state ahead of
  Redis: `stale` is set, and the runner restores the checkpoint and replays the
  pending entries (`recovering`) before it goes on;
- a window output whose history write failed (its key holds another type: it would
  fail every time) is marked `dead_output`: the replay makes it again, and `build` puts
  it in the dead-letter stream instead of history, in a commit that checkpoints the
  window that made it (so it is not made, nor dead-lettered, again).

`late` and `skipped` are counters (per pipeline, and per pipeline and reason) for
metrics: they only grow, over the runner's life.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from processors.pipelines.partition_windows import ROUTED_FIELD, Aggregator
from processors.pipelines.plan import Pipelines, Plan
from processors.pipelines.transform import IngestEvent, TopicEvent, group_by_topic
from processors.worker.dead_letters import dead_letter_record
from processors.worker.fencing import CommitPlan, Entry, Value
from processors.worker.history_writes import history_write
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.streamids import parse_id
from realtime.core.topics import partition_of
from realtime.core.wire import UpdatesEncoder

logger = logging.getLogger(__name__)

Planner = Callable[[IngestEvent, int], Plan]

ADVANCE_S = 0.2  # how often the timer closes idle topics' windows, at most
NO_ID = (0, 0)


@dataclass
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


@dataclass
class PartitionPipelines:
    pipelines: Pipelines
    keys: Keys
    partitions: int
    planner: Planner | None = None
    checkpoint_s: float = 1.0  # how often window state is saved (and its entries acked)
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
    _last_checkpoint: float = field(default_factory=time.monotonic)
    _last_advance: float = 0.0

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

    def restore(self, fields: Mapping[bytes | str, bytes | str]) -> None:
        """Load the checkpoint (HGETALL of `rt:windows:{p}`); pending entries are then
        replayed by the runner's recovery."""
        self._aggregator = Aggregator(self.pipelines)
        restored = self._aggregator.restore(fields)
        self.offset = parse_id(restored.offset) if restored.offset else NO_ID
        self.routed = parse_id(restored.routed) if restored.routed else NO_ID
        self._unsaved = []
        self._dirty = False
        self.stale = False
        self._last_checkpoint = time.monotonic()
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
        clock_ms: int | None = None,
        checkpoint: bool = False,
    ) -> Batch:
        """The commit for `outcomes` (none failed). `clock_ms`: the timer may close idle
        windows (a valid clock, see pipelines/partition_windows.py); `checkpoint`: save now."""
        aggregator = self.aggregator
        plan = CommitPlan()
        sources: list[int] = []
        outputs: set[int] = set()
        dead_outputs: list[tuple[str, str]] = []
        events: list[TopicEvent] = []
        offset, routed = self.offset, self.routed
        last_offset_id = ""
        last_routed_id = ""
        pending: list[str] = []
        fed = False

        def emit(new: list[TopicEvent], source: int, *, output: bool = True) -> None:
            for event in new:
                write = history_write(self.keys, event)
                if output:
                    error = self._dead_outputs.get((write.key, write.id))
                    if error is not None:
                        plan.dead_letters.append(self._dead_window(stream, event, error))
                        dead_outputs.append((write.key, write.id))
                        continue
                    outputs.add(len(plan.history))
                plan.history.append(write)
                sources.append(source)
                events.append(event)

        for index, outcome in enumerate(outcomes):
            entry = outcome.entry
            if outcome.dead is not None or outcome.plan is None or outcome.event is None:
                plan.dead_letters.append(self._dead_letter(stream, outcome))
                plan.acks.append(entry.id)
                continue
            result, event = outcome.plan, outcome.event
            if result.passthrough is not None:
                emit([result.passthrough], index, output=False)
            entry_id = parse_id(entry.id)
            fed_this = False
            if result.feeds and entry_id > offset:
                for feed in result.feeds:
                    emit(aggregator.feed(feed, event), index)
                offset, last_offset_id, fed_this = entry_id, entry.id, True
            if result.routed and entry_id > routed:
                for copy in result.routed:
                    target = self.keys.ingest(partition_of(copy.topic, self.partitions))
                    flat: list[str] = []
                    for name, value in copy.ingest_fields().items():
                        flat += [name, value.decode() if isinstance(value, bytes) else value]
                    plan.routed.append((target, flat))
                routed, last_routed_id = entry_id, entry.id
            for skip in result.skipped:
                self.skipped[(skip.pipeline, skip.reason)] += 1
            if fed_this:
                fed = True
                pending.append(entry.id)
            else:
                plan.acks.append(entry.id)
        now = time.monotonic()
        # At most every ADVANCE_S (it visits every topic), and always before a checkpoint.
        advance = checkpoint or now - self._last_advance >= ADVANCE_S
        if clock_ms is not None and advance and len(aggregator):
            self._last_advance = now
            closed = aggregator.advance(clock_ms)
            if closed:
                fed = True
                emit(closed, -1)
        if last_routed_id:
            plan.checkpoint += [ROUTED_FIELD, last_routed_id]
        unsaved = self._dirty or self._unsaved or pending or fed
        due = now - self._last_checkpoint >= self.checkpoint_s
        checkpointed = bool(unsaved) and (checkpoint or due or bool(dead_outputs))
        if checkpointed:
            saved = aggregator.checkpoint(last_offset_id or self._offset_id(offset))
            for name, value in saved.fields.items():
                plan.checkpoint += [name, value.decode()]
            plan.removed = saved.removed
            plan.acks += self._unsaved
            plan.acks += pending
            pending = []
        for pipeline, count in aggregator.drain_late().items():
            self.late[pipeline] += count
            logger.info(
                "%s: %d late event(s) for pipeline %s (beyond its lateness: counted, not merged)",
                stream,
                count,
                pipeline,
            )
        plan.publishes = encoder.encode_updates(group_by_topic(events))
        return Batch(
            plan, sources, outputs, dead_outputs, fed, offset, routed, pending, checkpointed
        )

    def committed(self, batch: Batch) -> None:
        """`batch` is in Redis."""
        self.offset, self.routed = batch.offset, batch.routed
        if batch.checkpointed:
            self._unsaved = []
            self._dirty = False
            self._last_checkpoint = time.monotonic()
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
    def _offset_id(offset: tuple[int, int]) -> str:
        return f"{offset[0]}-{offset[1]}"

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
