"""One partition while this worker holds its lease, step 2 of the data path: recover
(restore the window checkpoint, replay what is pending), then read, plan each entry with
the pipelines, and commit each batch atomically (`fencing.py`); poison entries go to the
dead letters after `max_attempts`.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from processors.pipelines.transform import TransformError, decode_entry
from processors.worker.fencing import (
    Entry,
    FencedPartition,
    LeaseLost,
    ReadResult,
    is_missing_group,
)
from processors.worker.groups import ensure_group
from processors.worker.partition_pipelines import Outcome, PartitionPipelines
from realtime.core.backoff import Backoff
from realtime.core.keys import Keys
from realtime.core.metrics import WorkerMetrics
from realtime.core.wire import UpdatesEncoder

logger = logging.getLogger(__name__)


class Replay(Exception):
    """A commit failed after the window state was fed: restore it and replay."""


class Poisoned(Exception):
    """Encoding or committing these entries failed for no known reason: restore the
    state and retry them through recovery, which finds the culprit (see module)."""

    def __init__(self, entry_ids: list[str], error: str) -> None:
        super().__init__(error)
        self.entry_ids = entry_ids
        self.error = error


Fault = Callable[[str, Sequence[Entry]], None]


@dataclass
class Failures:
    """Consecutive failures per entry id, while the entry holds the partition."""

    counts: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add(self, entry_id: str, error: str) -> int:
        count = self.counts.get(entry_id, (0, ""))[0] + 1
        self.counts[entry_id] = (count, error)
        return count

    def get(self, entry_id: str) -> tuple[int, str]:
        return self.counts.get(entry_id, (0, ""))

    def forget(self, entry_ids: Sequence[str]) -> None:
        counts = self.counts
        if counts:
            for entry_id in entry_ids:
                counts.pop(entry_id, None)


NO_FAILURE = (0, "")


def attempt(
    entry: Entry,
    stage: PartitionPipelines,
    failures: Failures,
    max_attempts: int,
    fault: Fault | None = None,
) -> Outcome:
    """Decide what to do with one entry now (pure apart from calling the planner)."""
    # Nothing has failed and the entry is new (the common case): one test per entry.
    if failures.counts or entry.attempts or entry.deliveries > max_attempts:
        outcome = _retried(entry, failures, max_attempts)
        if outcome is not None:
            return outcome
    try:
        if fault is not None:
            fault("process", [entry])
        fields = entry.fields
        event = decode_entry(entry.id, fields)
        return Outcome(entry, event, stage.plan_entry(event, fields))
    except TransformError as exc:
        return Outcome(entry, dead=str(exc))
    except Exception as exc:
        logger.exception("planning failed on %s", entry.id)
        return Outcome(entry, failed=f"{type(exc).__name__}: {exc}")


def _retried(entry: Entry, failures: Failures, max_attempts: int) -> Outcome | None:
    """An entry that failed or was delivered too often: to dead-letter (else None)."""
    failed, last_error = failures.get(entry.id) if failures.counts else NO_FAILURE
    if failed >= max_attempts:
        return Outcome(
            entry, dead=f"failed {failed} times; last error: {last_error}", attempts=failed
        )
    if entry.attempts >= max_attempts:
        if entry.attempts >= 2 * max_attempts:
            # Even dead-lettering it kept failing: a record without its fields.
            entry = replace(entry, fields={})
        return Outcome(
            entry,
            dead=(
                f"did not complete in {entry.attempts} attempts (each failed or crashed the "
                f"partition runner); last error: {entry.last_error or last_error or 'unknown'}"
            ),
            attempts=entry.attempts,
        )
    if entry.deliveries > max_attempts:
        return Outcome(
            entry,
            dead=(
                f"delivered {entry.deliveries} times without completing (workers died or "
                f"lost the partition while processing it); last error: {last_error or 'none'}"
            ),
            attempts=entry.deliveries,
        )
    return None


TIMER_WAIT_MS = 250  # the longest wait for new entries while windows are open


class PartitionRunner:
    def __init__(
        self,
        fenced: FencedPartition,
        redis: Redis,
        keys: Keys,
        encoder: UpdatesEncoder,
        stage: PartitionPipelines,
        *,
        batch_size: int,
        block_ms: int,
        max_attempts: int,
        burst: bool = False,
        metrics: WorkerMetrics | None = None,
        fault: Fault | None = None,
    ) -> None:
        self.fenced = fenced
        self.fault = fault
        # The entries being processed: a crash of the runner is noted against them.
        self.in_flight: list[str] = []
        self.redis = redis
        self.keys = keys
        self.encoder = encoder
        self.stage = stage
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.max_attempts = max_attempts
        self.burst = burst
        self.stopping = asyncio.Event()
        self.lost = False
        self.processed = 0
        self.failures = Failures()
        self._retry = Backoff(base_s=0.05, cap_s=2.0)
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        # When the batch in hand was read (wall clock, s): its stages' start (metrics.stage)
        self._read_at: float | None = None
        self._late_counted: dict[str, int] = {}
        self._skipped_counted: dict[tuple[str, str], int] = {}

    @property
    def partition(self) -> int:
        return self.fenced.partition

    def stop(self) -> None:
        """Finish the batch in hand, then return (cooperative: nothing is cut short)."""
        self.stopping.set()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self.fenced.close()

    async def _run(self) -> None:
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        recovering = True
        ahead: ReadResult | None = None  # a read that found nothing, not acted on yet
        while not self.stopping.is_set():
            try:
                if self.stage.stale:
                    self.stage.restore(
                        await self.redis.hgetall(self.fenced.windows_key), now=time.monotonic()
                    )
                    recovering = True
                if recovering:
                    claimed = await self.fenced.claim(self.batch_size)
                    if claimed.entries:
                        entries = await self.fenced.mark(claimed.entries)
                        logger.info(
                            "partition %d: finishing %d pending entries from %s",
                            self.partition,
                            len(entries),
                            entries[0].id,
                        )
                        # Checkpointed (so acknowledged) at once: the next claim goes on.
                        await self._timed(entries, checkpoint=True)
                    recovering = not claimed.done
                else:
                    read = ahead if ahead is not None else await self.fenced.read(self.batch_size)
                    ahead = None
                    if await self._take(read):
                        pass
                    elif self.burst:
                        await self._commit([], clock_ms=read.clock_ms, checkpoint=True)
                        await self.fenced.record_held()
                        return
                    else:
                        await self._commit([], clock_ms=read.clock_ms)
                        wait = self.block_ms
                        if self.stage.open_windows or self.stage.unsaved:
                            wait = min(wait, TIMER_WAIT_MS)
                        # Wait and read in one round trip: what it read is taken at
                        # once; nothing (the wait ran out) is the next turn's read.
                        read = await self.fenced.wait_and_read(read.last_id, wait, self.batch_size)
                        if not await self._take(read):
                            ahead = read
                if backoff.attempt:
                    self.metrics.redis_reconnect("partition")
                backoff.reset()
            except LeaseLost:
                logger.warning("partition %d: lease lost; stopping", self.partition)
                self.lost = True
                return
            except Replay:
                recovering = True
                await self._pause(backoff.next_delay())
            except Poisoned as exc:
                # Whatever the batch fed is suspect: restore it, and let recovery (which
                # counts attempts in Redis) find the entry to blame.
                self.stage.stale = True
                recovering = True
                with contextlib.suppress(RedisError, OSError):
                    await self.fenced.note(exc.entry_ids, exc.error)
                await self._pause(self._retry.next_delay())
            except ResponseError as exc:
                self.metrics.redis_error("partition")
                recovering = True
                if is_missing_group(exc):
                    with contextlib.suppress(RedisError, OSError):
                        await ensure_group(self.redis, self.fenced.stream, self.fenced.group)
                delay = backoff.next_delay()
                logger.warning(
                    "partition %d: Redis refused (%s); retrying in %.1fs",
                    self.partition,
                    exc,
                    delay,
                )
                await self._pause(delay)
            except (RedisError, OSError) as exc:
                self.metrics.redis_error("partition")
                recovering = True
                delay = backoff.next_delay()
                logger.warning(
                    "partition %d: Redis unavailable (%s); retrying in %.1fs",
                    self.partition,
                    exc,
                    delay,
                )
                await self._pause(delay)
        await self._save()

    async def _save(self) -> None:
        """Stopping with the lease: checkpoint, so the next owner replays nothing, and
        record the directory counts held back."""
        try:
            if not self.stage.stale and self.stage.unsaved:
                await self._commit([], checkpoint=True)
            await self.fenced.record_held()
        except (LeaseLost, Replay, RedisError, OSError) as exc:
            logger.warning("partition %d: final checkpoint failed: %r", self.partition, exc)

    async def _take(self, read: ReadResult) -> bool:
        """Process what a read returned, if anything (False: nothing)."""
        if not read.entries:
            return False
        # All that was there: the timer may close idle windows up to now.
        clock = read.clock_ms if len(read.entries) < self.batch_size else None
        self._read(read.entries[0])
        await self._timed(read.entries, clock_ms=clock)
        return True

    def _read(self, oldest: Entry) -> None:
        """A batch was read: how long its oldest entry waited in the stream (its id's
        time is Redis's clock, on the same machine as a rule; ms resolution)."""
        self._read_at = now = time.time()
        accepted_ms = int(oldest.id.partition("-")[0])
        self.metrics.stage["read"].observe(max(now - accepted_ms / 1000, 0.0))

    async def _timed(
        self, entries: Sequence[Entry], *, clock_ms: int | None = None, checkpoint: bool = False
    ) -> None:
        started = time.perf_counter()
        await self.process(entries, clock_ms=clock_ms, checkpoint=checkpoint)
        self.metrics.batch_duration.observe(time.perf_counter() - started)

    async def process(
        self, entries: Sequence[Entry], *, clock_ms: int | None = None, checkpoint: bool = False
    ) -> None:
        """Commit `entries` in order; a failing entry is retried in place (see module)."""
        todo = list(entries)
        self.in_flight = [entry.id for entry in todo]
        while todo:
            outcomes = [
                attempt(e, self.stage, self.failures, self.max_attempts, self.fault) for e in todo
            ]
            limit = next((i for i, o in enumerate(outcomes) if o.failed is not None), len(todo))
            error = outcomes[limit].failed if limit < len(todo) else None
            clock = clock_ms if limit == len(todo) else None
            # A failed history write: the writes before it are in history already, so
            # commit just those (their writes are skipped as duplicates) and retry it.
            try:
                while (
                    failure := await self._commit(
                        outcomes[:limit], clock_ms=clock, checkpoint=checkpoint
                    )
                ) is not None:
                    limit, error = failure
                    clock = None
            except (LeaseLost, Replay, RedisError, OSError):
                raise
            except Exception as exc:
                # Not an outage, and no entry named: see the module docstring.
                ids = [outcome.entry.id for outcome in outcomes[:limit]]
                logger.error(
                    "partition %d: %d entries from %s failed to encode or commit; retrying "
                    "them through recovery",
                    self.partition,
                    len(ids),
                    ids[0] if ids else "-",
                    exc_info=exc,
                )
                raise Poisoned(ids, f"{type(exc).__name__}: {exc}") from exc
            if error is not None:
                self._record_failure(todo[limit], error)
            todo = todo[limit:]
            self.in_flight = [entry.id for entry in todo]
            if limit:
                self._retry.reset()
            if todo:
                if self.stopping.is_set():
                    return  # still pending: the next owner, or our own recovery, retries it
                await self._pause(self._retry.next_delay())

    def _record_failure(self, entry: Entry, error: str) -> None:
        count = self.failures.add(entry.id, error)
        logger.warning(
            "partition %d: entry %s failed (attempt %d of %d): %s",
            self.partition,
            entry.id,
            count,
            self.max_attempts,
            error,
        )

    async def _commit(
        self, outcomes: Sequence[Outcome], *, clock_ms: int | None = None, checkpoint: bool = False
    ) -> tuple[int, str] | None:
        """Commit; on a failed history write, (index of its outcome, error)."""
        # The seam sees the entries committed as events, not those being dead-lettered.
        live = [o.entry for o in outcomes if o.dead is None] if self.fault is not None else []
        if self.fault is not None:
            self.fault("encode", live)
        batch = self.stage.build(
            self.fenced.stream,
            outcomes,
            self.encoder,
            now=time.monotonic(),
            clock_ms=clock_ms,
            checkpoint=checkpoint,
        )
        batch.plan.cleared = [o.entry.id for o in outcomes if o.entry.marked]
        self._count_late()
        read_at, self._read_at = self._read_at, None  # the first commit of a batch read
        if not batch.plan:
            await self.fenced.record_due()  # an idle turn: the directory catches up
            return None
        try:
            if self.fault is not None:
                self.fault("commit", live)
            sent = time.time()
            failure = await self.fenced.commit(batch.plan)
        except BaseException:
            self.stage.failed(batch)
            raise
        if read_at is not None:
            self.metrics.stage["process"].observe(max(sent - read_at, 0.0))
            self.metrics.stage["commit"].observe(max(time.time() - sent, 0.0))
        if failure is not None:
            self.stage.failed(batch)
            source = batch.sources[failure.event_index]
            dead = self.stage.dead_output(batch, failure.event_index, failure.error)
            if dead is not None:
                # A window output, not the entry's fault: the replay dead-letters it.
                logger.error("partition %d: dead-lettering %s", self.partition, dead)
                raise Replay(failure.error)
            if self.stage.stale:
                # The window state went ahead of Redis: restore it and replay the
                # pending entries, this one among them (its failure is counted).
                self._record_failure(outcomes[source].entry, failure.error)
                raise Replay(failure.error)
            return source, failure.error
        self.stage.committed(batch)
        for outcome in outcomes if batch.plan.dead_letters else ():
            if outcome.dead is not None:
                logger.error(
                    "partition %d: dead-lettered %s: %s",
                    self.partition,
                    outcome.entry.id,
                    outcome.dead,
                )
        if self.failures.counts:
            self.failures.forget([outcome.entry.id for outcome in outcomes])
        self.processed += len(outcomes)
        self.metrics.entries.inc(len(outcomes))
        self.metrics.events.inc(len(batch.plan.history))
        if batch.plan.dead_letters:
            self.metrics.dead_letters.inc(len(batch.plan.dead_letters))
        return None

    def _count_late(self) -> None:
        """The stage's late and skipped events (cumulative) into the metrics counters."""
        for pipeline, total in self.stage.late.items():
            counted = self._late_counted.get(pipeline, 0)
            if total > counted:
                self.metrics.late_events.labels(pipeline).inc(total - counted)
                self._late_counted[pipeline] = total
        for key, total in self.stage.skipped.items():
            counted = self._skipped_counted.get(key, 0)
            if total > counted:
                self.metrics.skipped_events.labels(*key).inc(total - counted)
                self._skipped_counted[key] = total

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self.stopping.wait()
