"""The worker's coordinator, step 2 of the data path (processing): which partitions this
worker owns (membership, its fair share, leases renewed and handed over), and a
`PartitionRunner` for each.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from processors.pipelines.config import load_pipelines
from processors.pipelines.plan import Pipelines
from processors.pipelines.retention import Retention
from processors.worker.fencing import FencedPartition
from processors.worker.groups import ensure_group, remove_dead_consumers, trim_acknowledged
from processors.worker.heartbeat import Heartbeat, stale_after_ms
from processors.worker.leases import Lease, Leases
from processors.worker.membership import Membership, fair_share
from processors.worker.partition import Fault, PartitionRunner
from processors.worker.partition_pipelines import PartitionPipelines, Planner
from realtime.core.backoff import Backoff
from realtime.core.keys import Keys
from realtime.core.metrics import WorkerMetrics
from realtime.core.settings import Settings
from realtime.core.wire import UpdatesEncoder

logger = logging.getLogger(__name__)

HOUSEKEEPING_S = 10.0
STOP_GRACE_S = 10.0


@dataclass
class Owned:
    lease: Lease
    runner: PartitionRunner
    task: asyncio.Task[None]


def owner_token(consumer: str) -> str:
    """Unique per process start: a restarted worker with the same consumer name does not
    inherit its predecessor's leases; it takes partitions over like anybody else."""
    return f"{consumer}#{uuid.uuid4().hex[:8]}"


class Consumer:
    def __init__(
        self,
        redis: Redis,
        encoder: UpdatesEncoder,
        settings: Settings,
        *,
        pipelines: Pipelines | None = None,
        planner: Planner | None = None,
        metrics: WorkerMetrics | None = None,
        fault: Fault | None = None,
    ) -> None:
        """`pipelines`: default, the file `settings.pipelines_file` names (PipelinesError
        if it is invalid); `planner` replaces `Pipelines.plan` and `fault` is called at
        each stage of each runner (tests inject failures: `processors/worker/partition.py`)."""
        self.fault = fault
        self.redis = redis
        self.encoder = encoder
        self.settings = settings
        self.keys = Keys.of(settings)
        self.group = settings.group
        self.owner = owner_token(settings.consumer)
        self.pipelines = pipelines or Pipelines(load_pipelines(settings.pipelines_file))
        self.retention = Retention(
            self.pipelines.config.retention, settings.history_retention_ms, settings.history_maxlen
        )
        self.planner = planner
        self.leases = Leases(redis, self.keys, self.owner, settings.lease_ms)
        self.membership = Membership(redis, self.keys, self.owner, settings.lease_ms)
        self.heartbeat = Heartbeat(
            redis, self.keys, settings.consumer, self.owner, stale_after_ms(settings)
        )
        self.owned: dict[int, Owned] = {}
        self.handing_over: set[int] = set()
        # Runners of lost partitions still finishing their batch (their fenced writes
        # fail); a partition is not taken again until its old runner has returned.
        self.retiring: dict[int, Owned] = {}
        self._processed = 0
        # Counters of finished runners (the live ones' are added on read).
        self._late: Counter[str] = Counter()
        self._skipped: Counter[tuple[str, str]] = Counter()
        # Notified after every tick: lets a caller wait for an ownership change.
        self.changed = asyncio.Condition()
        self._groups_ready = False
        self._last_housekeeping = time.monotonic()
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.metrics.partitions_owned.set_function(lambda: len(self.owned))

    @property
    def tick_s(self) -> float:
        return self.settings.lease_ms / 3000

    @property
    def processed(self) -> int:
        """Entries this worker has committed (events written or dead-lettered)."""
        running = [*self.owned.values(), *self.retiring.values()]
        return self._processed + sum(o.runner.processed for o in running)

    @property
    def late_events(self) -> Counter[str]:
        """Events too late for their window (beyond the lateness), per pipeline: counted,
        not merged. Only grows (a metric counter)."""
        total = Counter(self._late)
        for owned in [*self.owned.values(), *self.retiring.values()]:
            total.update(owned.runner.stage.late)
        return total

    @property
    def skipped_events(self) -> Counter[tuple[str, str]]:
        """What the pipelines did not produce, per (pipeline, reason): see REASONS in
        processors/pipelines/plan.py. Only grows."""
        total = Counter(self._skipped)
        for owned in [*self.owned.values(), *self.retiring.values()]:
            total.update(owned.runner.stage.skipped)
        return total

    def partitions(self) -> list[int]:
        """The partitions this worker owns now."""
        return sorted(self.owned)

    async def ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for partition in range(self.settings.partitions):
            await ensure_group(self.redis, self.keys.ingest(partition), self.group)
        self._groups_ready = True

    # -- the main loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Coordinate until `stop`; in burst mode, drain the partitions this worker gets
        and return."""
        try:
            if burst:
                await self._burst()
                return
            backoff = Backoff(base_s=0.1, cap_s=self.tick_s)
            while not stop.is_set():
                try:
                    await self.tick()
                    if backoff.attempt:
                        self.metrics.redis_reconnect("worker")
                    backoff.reset()
                    delay = self.tick_s
                except (RedisError, OSError) as exc:
                    self.metrics.redis_error("worker")
                    self._groups_ready = False
                    delay = backoff.next_delay()
                    logger.warning("worker: Redis unavailable (%s); retrying in %.1fs", exc, delay)
                await _sleep_or_stop(stop, delay)
        finally:
            await self.shutdown()

    async def _burst(self) -> None:
        await self.ensure_groups()
        finished: set[int] = set()  # drained (or kept crashing: logged, not retried forever)
        # Crashes in a row without progress, per partition: a crash's entries are counted
        # (rt:attempts), so an entry that crashes every runner is dead-lettered after
        # max_attempts of them; more than that is not an entry's doing.
        crashes: Counter[int] = Counter()
        while True:
            alive = await self.membership.heartbeat()
            await self.heartbeat.beat()
            # A lease lost mid-burst (a stall past its expiry) is taken again when free, so
            # the burst never ends with entries unread; one another worker holds is its.
            target = fair_share(self.owner, alive, self.settings.partitions)
            await self._acquire(target, burst=True, skip=finished)
            tasks = [o.task for o in [*self.owned.values(), *self.retiring.values()]]
            if not tasks:
                return
            # Keep the leases (and our membership) alive while the runners drain.
            await asyncio.wait(tasks, timeout=self.tick_s)
            for partition, owned in self.owned.items():
                if not owned.task.done() or owned.runner.lost:
                    continue
                if owned.task.cancelled() or owned.task.exception() is None:
                    finished.add(partition)
                    continue
                crashes[partition] = 1 if owned.runner.processed else crashes[partition] + 1
                if crashes[partition] > self.settings.max_attempts + 1:
                    finished.add(partition)
            await self._renew()
            await self._reap()

    async def tick(self) -> None:
        await self.ensure_groups()
        alive = await self.membership.heartbeat()
        await self.heartbeat.beat()
        await self._reap()
        await self._renew()
        target = fair_share(self.owner, alive, self.settings.partitions)
        keeping = [p for p in self.partitions() if p not in self.handing_over]
        for partition in keeping[target:]:
            logger.info("handing partition %d over (fair share is %d)", partition, target)
            self.handing_over.add(partition)
            self.owned[partition].runner.stop()
        if len(keeping) < target:
            await self._acquire(target)
        if time.monotonic() - self._last_housekeeping >= HOUSEKEEPING_S:
            self._last_housekeeping = time.monotonic()
            await self._housekeeping(alive)
        async with self.changed:
            self.changed.notify_all()

    # -- leases and runners ---------------------------------------------------------------

    async def _acquire(
        self, target: int, *, burst: bool = False, skip: Collection[int] = ()
    ) -> None:
        for partition in range(self.settings.partitions):
            if len(self.owned) - len(self.handing_over) >= target:
                return
            if partition in self.owned or partition in self.retiring or partition in skip:
                continue
            lease = await self.leases.acquire(partition)
            if lease is not None:
                self._start(lease, burst=burst)

    def _start(self, lease: Lease, *, burst: bool) -> None:
        partition = lease.partition
        fenced = FencedPartition(
            self.redis,
            self.keys,
            partition,
            token=lease.token,
            group=self.group,
            consumer=self.owner,
            history_maxlen=self.settings.history_maxlen,
            directory_idle_ms=self.settings.directory_idle_s * 1000,
        )
        stage = PartitionPipelines(
            self.pipelines,
            self.keys,
            self.settings.partitions,
            planner=self.planner,
            checkpoint_s=self.settings.checkpoint_ms / 1000,
            retention=self.retention,
        )
        runner = PartitionRunner(
            fenced,
            self.redis,
            self.keys,
            self.encoder,
            stage,
            batch_size=self.settings.batch_size,
            block_ms=self.settings.block_ms,
            max_attempts=self.settings.max_attempts,
            burst=burst,
            metrics=self.metrics,
            fault=self.fault,
        )
        task = asyncio.create_task(runner.run(), name=f"partition-{partition}")
        self.owned[partition] = Owned(lease, runner, task)
        self.metrics.lease_changes.labels("acquired").inc()
        logger.info("owning partition %d", partition)

    async def _renew(self) -> None:
        """Renew our leases; retire the runners of partitions whose lease we lost or
        could not renew in time (their fenced reads and writes would fail anyway)."""
        now = time.monotonic()
        stale = [o.lease for o in self.owned.values() if o.lease.expired(now)]
        fresh = [o.lease for o in self.owned.values() if not o.lease.expired(now)]
        lost = await self.leases.renew(fresh)
        for lease in [*stale, *lost]:
            logger.warning("lost the lease of partition %d", lease.partition)
            self.metrics.lease_changes.labels("lost").inc()
            owned = self.owned.pop(lease.partition)
            self.handing_over.discard(lease.partition)
            owned.runner.stop()
            self.retiring[lease.partition] = owned

    async def _reap(self) -> None:
        """Account for runners that returned: handed over, lost, or crashed."""
        for partition, owned in list(self.retiring.items()):
            if owned.task.done():
                del self.retiring[partition]
                self._finished(partition, owned)
        for partition, owned in list(self.owned.items()):
            if not owned.task.done():
                continue
            await _note_crash(owned)
            del self.owned[partition]
            self.handing_over.discard(partition)
            self._finished(partition, owned)
            if not owned.runner.lost:
                # Handed over or crashed: release it so the next owner starts at once.
                with contextlib.suppress(RedisError, OSError):
                    if await self.leases.release(owned.lease):
                        self.metrics.lease_changes.labels("released").inc()
                        logger.info("released partition %d", partition)

    def _finished(self, partition: int, owned: Owned) -> None:
        self._processed += owned.runner.processed
        self._late.update(owned.runner.stage.late)
        self._skipped.update(owned.runner.stage.skipped)
        late = sum(owned.runner.stage.late.values())
        if late:
            logger.info("partition %d: %d late event(s) not merged into windows", partition, late)
        if not owned.task.cancelled() and owned.task.exception() is not None:
            logger.error("partition %d: runner crashed", partition, exc_info=owned.task.exception())

    async def _housekeeping(self, alive: list[str]) -> None:
        for partition in self.partitions():
            stream = self.keys.ingest(partition)
            await trim_acknowledged(self.redis, stream, self.group)
            await remove_dead_consumers(
                self.redis, stream, self.group, set(alive), min_idle_ms=self.settings.lease_ms
            )

    # -- shutdown -------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every runner (each finishes its batch), release the leases, leave."""
        running = [*self.owned.values(), *self.retiring.values()]
        for owned in running:
            owned.runner.stop()
        tasks = [owned.task for owned in running]
        if tasks:
            grace = STOP_GRACE_S + self.settings.block_ms / 1000
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._reap()
        with contextlib.suppress(RedisError, OSError):
            await self.membership.leave()
            await self.heartbeat.clear()


async def _note_crash(owned: Owned) -> None:
    """A runner that crashed: its error becomes the last error of the entries it had in
    hand (their attempts are counted when recovery retries them)."""
    if owned.task.cancelled() or owned.task.exception() is None or not owned.runner.in_flight:
        return
    exc = owned.task.exception()
    with contextlib.suppress(RedisError, OSError):
        await owned.runner.fenced.note(
            owned.runner.in_flight, f"{type(exc).__name__}: {exc} (crashed the partition runner)"
        )


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await stop.wait()
