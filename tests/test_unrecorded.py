"""The topic directory's counts held back by a partition's owner (`Unrecorded`): a
topic is recorded at most once a step, and every write that happened is counted once:
pure, with a clock passed in, and through real fenced commits against real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from processors.worker.consumer import Consumer
from processors.worker.fencing import CommitPlan, FencedPartition, HistoryWrite
from processors.worker.groups import ensure_group
from processors.worker.leases import Leases
from processors.worker.unrecorded import Unrecorded
from realtime.core.directory import decode_info
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from realtime.core.wire import UpdateEncoder
from realtime.ingest.api import IngestWriter


def write(topic: str, ms: int) -> HistoryWrite:
    return HistoryWrite(f"t:{topic}", f"{ms}-0", ["ts", str(ms)], topic=topic, ts=ms)


def documents(writes: list[HistoryWrite]) -> list[list[object]]:
    return [w.document() for w in writes]


@pytest.mark.unit
def test_a_topic_recorded_within_the_step_is_held_back_and_handed_on_once_due() -> None:
    held = Unrecorded(step_s=1.0)
    first = [write("a", 1), write("a", 2), write("b", 3)]
    docs = documents(first)
    batch = held.hold(first, docs, now=10.0)
    assert (batch.back, batch.entries) == ([], [])  # new topics: the script records them
    assert [d[5] for d in docs] == ["a", "a", "b"]
    held.committed(batch, first, set(), now=10.0)

    second = [write("a", 4), write("b", 5), write("a", 6)]
    docs = documents(second)
    batch = held.hold(second, docs, now=10.5)
    assert batch.back == [0, 1, 2]
    assert [d[5] for d in docs] == ["", "", ""]  # left out of the script's record
    held.committed(batch, second, {2}, now=10.5)  # write 2 ("b") was there already
    assert not held.due(11.4)
    assert held.due(11.5)

    # Due: a commit with none of its topics still takes the held counts, oldest first.
    third = [write("c", 7)]
    batch = held.hold(third, documents(third), now=11.5)
    assert batch.entries == [["a", "6-0", "6", 2]]  # "b" was held later (its write refused)
    held.committed(batch, third, set(), now=11.5)
    assert not held  # nothing else held: "b" had no write that happened

    # A topic recorded again after the step takes its held count into the same commit.
    fourth = [write("a", 8)]
    batch = held.hold(fourth, documents(fourth), now=11.9)
    assert batch.back == [0]
    held.committed(batch, fourth, set(), now=11.9)
    fifth = [write("a", 9)]
    docs = documents(fifth)
    batch = held.hold(fifth, docs, now=12.6)
    assert (batch.back, docs[0][5], batch.entries) == ([], "a", [["a", "8-0", "8", 1]])


@pytest.mark.unit
def test_a_commit_stopped_by_a_failed_write_counts_only_the_writes_before_it() -> None:
    held = Unrecorded(step_s=1.0)
    first = [write("a", 1)]
    held.committed(held.hold(first, documents(first), now=0.0), first, set(), now=0.0)
    again = [write("a", 2), write("a", 3), write("a", 4)]
    batch = held.hold(again, documents(again), now=0.1)
    held.committed(batch, again, set(), now=0.1, written=1)  # write 2 failed: 1 made
    assert held.hold_all().entries == [["a", "2-0", "2", 1]]


@pytest.mark.integration
async def test_the_directory_counts_every_write_once_though_topics_are_recorded_once_a_step(
    redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.prefix)
    await ensure_group(redis, keys.ingest(0), "g")
    lease = await Leases(redis, keys, "worker-a", lease_ms=10_000).acquire(0)
    assert lease is not None
    fenced = FencedPartition(
        redis, keys, 0, token=lease.token, group="g", consumer="c", history_maxlen=100
    )
    fenced.unrecorded = Unrecorded(step_s=0.3)
    info = keys.directory(0)[2]

    def history(ms: int) -> HistoryWrite:
        return HistoryWrite(keys.topic("a"), f"{ms}-0", ["ts", str(ms)], topic="a", ts=ms)

    async def recorded() -> tuple[str, int]:
        found = decode_info(await redis.hget(info, "a"))
        assert found is not None
        return found.last_id, found.count + found.previous  # a 10 s bucket may end

    assert await fenced.commit(CommitPlan(history=[history(1)])) is None
    assert await recorded() == ("1-0", 1)
    # Held back: written to history, not yet to the directory. Write 3 is sent twice
    # (a commit replayed): it is counted once.
    for ms in (2, 3, 3):
        assert await fenced.commit(CommitPlan(history=[history(ms)])) is None
    assert await redis.xlen(keys.topic("a")) == 3
    assert await recorded() == ("1-0", 1)
    await fenced.record_due()  # not yet due
    assert await recorded() == ("1-0", 1)
    await asyncio.sleep(0.35)
    await fenced.record_due()
    assert await recorded() == ("3-0", 3)
    assert await fenced.commit(CommitPlan(history=[history(4)])) is None
    await fenced.record_held()  # the partition's last commit: everything
    assert await recorded() == ("4-0", 4)
    assert not fenced.unrecorded
    await fenced.close()


@pytest.mark.integration
async def test_a_worker_records_every_event_of_its_burst_by_its_last_commit(
    redis: Redis, settings: Settings
) -> None:
    """Batches of 10 over 3 topics: most writes are held back, and the burst's end
    hands them all to the directory."""
    settings = settings.with_overrides(batch_size=10)
    topics = ["held.a", "held.b", "held.c"]
    await IngestWriter(redis, settings).append(
        [{"topic": topics[n % 3], "data": {"n": n}} for n in range(300)]
    )
    encoder = UpdateEncoder.of(settings)
    await asyncio.wait_for(Consumer(redis, encoder, settings).run(asyncio.Event(), burst=True), 20)
    keys = Keys(settings.prefix)
    for topic in topics:
        info = keys.directory(partition_of(topic, settings.partitions))[2]
        found = decode_info(await redis.hget(info, topic))
        assert found is not None
        assert found.count + found.previous == 100  # a 10 s bucket may end meanwhile
