"""One partition while this worker holds its lease: recover, then read, transform, commit.

On taking a partition over, the runner first claims every entry still pending in it (a
dead owner's, or its own from before a Redis outage) and finishes them, oldest first;
only then does it read new entries. Each batch becomes one atomic commit: history
entries, fan-out publishes, dead letters and acks (`processors/fenced.py`).

A failing entry holds its partition, because the topic's later events must not overtake
it: it is retried in place with backoff. It goes to the dead-letter stream, and the
partition moves on, when processing it failed `max_attempts` times, when it has been
delivered `max_attempts` times without completing (it keeps killing workers), or at once
when it is malformed (retrying cannot help). Redis outages are not failures of an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from processors.dead_letters import dead_letter_record
from processors.fenced import CommitPlan, Entry, FencedPartition, LeaseLost, is_missing_group
from processors.groups import ensure_group
from processors.history import history_write
from processors.transform import (
    IngestEvent,
    TopicEvent,
    TransformError,
    decode_entry,
    group_by_topic,
    passthrough,
)
from realtime.backoff import Backoff
from realtime.fanout import FanoutManager
from realtime.keys import Keys

logger = logging.getLogger(__name__)

Transform = Callable[[IngestEvent], list[TopicEvent]]


@dataclass
class Outcome:
    """What one attempt made of one entry: events to commit, or a reason to dead-letter
    it, or a failure to retry."""

    entry: Entry
    events: list[TopicEvent] = field(default_factory=list)
    dead: str | None = None
    attempts: int = 1
    failed: str | None = None


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
        for entry_id in entry_ids:
            self.counts.pop(entry_id, None)


def attempt(entry: Entry, transform: Transform, failures: Failures, max_attempts: int) -> Outcome:
    """Decide what to do with one entry now (pure apart from calling the transform)."""
    failed, last_error = failures.get(entry.id)
    if failed >= max_attempts:
        return Outcome(
            entry, dead=f"failed {failed} times; last error: {last_error}", attempts=failed
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
    try:
        return Outcome(entry, transform(decode_entry(entry.id, entry.fields)))
    except TransformError as exc:
        return Outcome(entry, dead=str(exc))
    except Exception as exc:
        logger.exception("transform failed on %s", entry.id)
        return Outcome(entry, failed=f"{type(exc).__name__}: {exc}")


def build_plan(
    stream: str, outcomes: Sequence[Outcome], keys: Keys, fanout: FanoutManager
) -> tuple[CommitPlan, list[int]]:
    """The commit for `outcomes` (none of them failed), and for each history write the
    index of the outcome it came from."""
    plan = CommitPlan()
    sources: list[int] = []
    events: list[TopicEvent] = []
    for index, outcome in enumerate(outcomes):
        if outcome.dead is not None:
            plan.dead_letters.append(
                dead_letter_record(
                    stream, outcome.entry.id, outcome.entry.fields, outcome.dead, outcome.attempts
                )
            )
        for event in outcome.events:
            plan.history.append(history_write(keys, event))
            sources.append(index)
            events.append(event)
        plan.acks.append(outcome.entry.id)
    plan.publishes = fanout.encode_updates(group_by_topic(events))
    return plan, sources


class PartitionRunner:
    def __init__(
        self,
        fenced: FencedPartition,
        redis: Redis,
        keys: Keys,
        fanout: FanoutManager,
        *,
        batch_size: int,
        block_ms: int,
        max_attempts: int,
        transform: Transform = passthrough,
        burst: bool = False,
    ) -> None:
        self.fenced = fenced
        self.redis = redis
        self.keys = keys
        self.fanout = fanout
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.max_attempts = max_attempts
        self.transform = transform
        self.burst = burst
        self.stopping = asyncio.Event()
        self.lost = False
        self.processed = 0
        self.failures = Failures()
        self._retry = Backoff(base_s=0.05, cap_s=2.0)

    @property
    def partition(self) -> int:
        return self.fenced.partition

    def stop(self) -> None:
        """Finish the batch in hand, then return (cooperative: nothing is cut short)."""
        self.stopping.set()

    async def run(self) -> None:
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        recovering = True
        while not self.stopping.is_set():
            try:
                if recovering:
                    claimed = await self.fenced.claim(self.batch_size)
                    if claimed.entries:
                        logger.info(
                            "partition %d: finishing %d pending entries from %s",
                            self.partition,
                            len(claimed.entries),
                            claimed.entries[0].id,
                        )
                        await self.process(claimed.entries)
                    recovering = not claimed.done
                else:
                    read = await self.fenced.read(self.batch_size)
                    if read.entries:
                        await self.process(read.entries)
                    elif self.burst:
                        return
                    else:
                        await self.fenced.wait(read.last_id, self.block_ms)
                backoff.reset()
            except LeaseLost:
                logger.warning("partition %d: lease lost; stopping", self.partition)
                self.lost = True
                return
            except ResponseError as exc:
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
                recovering = True
                delay = backoff.next_delay()
                logger.warning(
                    "partition %d: Redis unavailable (%s); retrying in %.1fs",
                    self.partition,
                    exc,
                    delay,
                )
                await self._pause(delay)

    async def process(self, entries: Sequence[Entry]) -> None:
        """Commit `entries` in order; a failing entry is retried in place (see module)."""
        todo = list(entries)
        while todo:
            outcomes = [attempt(e, self.transform, self.failures, self.max_attempts) for e in todo]
            limit = next((i for i, o in enumerate(outcomes) if o.failed is not None), len(todo))
            error = outcomes[limit].failed if limit < len(todo) else None
            # A failed history write: the writes before it are in history already, so
            # commit just those (their writes are skipped as duplicates) and retry it.
            while (failure := await self._commit(outcomes[:limit])) is not None:
                limit, error = failure
            if error is not None:
                self._record_failure(todo[limit], error)
            todo = todo[limit:]
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

    async def _commit(self, outcomes: Sequence[Outcome]) -> tuple[int, str] | None:
        """Commit; on a failed history write, (index of its outcome, error)."""
        if not outcomes:
            return None
        plan, sources = build_plan(self.fenced.stream, outcomes, self.keys, self.fanout)
        failure = await self.fenced.commit(plan)
        if failure is not None:
            return sources[failure.event_index], failure.error
        for outcome in outcomes:
            if outcome.dead is not None:
                logger.error(
                    "partition %d: dead-lettered %s: %s",
                    self.partition,
                    outcome.entry.id,
                    outcome.dead,
                )
        self.failures.forget(plan.acks)
        self.processed += len(outcomes)
        return None

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self.stopping.wait()
