"""Partition leases and fencing against real Redis, and the fair-share rule (pure)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from processors.worker.fencing import CommitPlan, FencedPartition, HistoryWrite, LeaseLost
from processors.worker.groups import ensure_group
from processors.worker.leases import Lease, Leases
from processors.worker.membership import Membership, fair_share
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.text import text


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.prefix)


def fenced(redis: Redis, keys: Keys, token: str) -> FencedPartition:
    return FencedPartition(redis, keys, 0, token=token, group="g", consumer="c", history_maxlen=100)


async def owned(redis: Redis, keys: Keys) -> tuple[Leases, Lease, FencedPartition]:
    """Partition 0 with its group, its lease held by worker-a, and fenced by it."""
    await ensure_group(redis, keys.ingest(0), "g")
    leases = Leases(redis, keys, "worker-a", lease_ms=10_000)
    lease = await leases.acquire(0)
    assert lease is not None
    return leases, lease, fenced(redis, keys, lease.token)


@pytest.mark.integration
async def test_a_lease_has_one_holder_until_released(redis: Redis, keys: Keys) -> None:
    a = Leases(redis, keys, "worker-a", lease_ms=10_000)
    b = Leases(redis, keys, "worker-b", lease_ms=10_000)
    lease = await a.acquire(0)
    assert lease is not None
    assert await b.acquire(0) is None
    assert await a.holder(0) == lease.token
    # Renewing or releasing needs the token: b can do neither.
    b_lease = Lease(0, "worker-b/1", 0.0)
    assert await b.renew([b_lease]) == [b_lease]
    assert await b.release(b_lease) is False
    assert await a.renew([lease]) == []
    assert await a.release(lease) is True
    assert await b.acquire(0) is not None


@pytest.mark.integration
async def test_an_expired_lease_is_taken_over_and_the_old_token_is_refused(
    redis: Redis, keys: Keys
) -> None:
    a = Leases(redis, keys, "worker-a", lease_ms=10_000)
    b = Leases(redis, keys, "worker-b", lease_ms=10_000)
    old = await a.acquire(0)
    assert old is not None
    await redis.delete(keys.lease(0))  # as if it expired while worker-a was paused
    new = await b.acquire(0)
    assert new is not None
    assert await a.renew([old]) == [old]  # worker-a learns it lost the partition
    assert await b.renew([new]) == []


@pytest.mark.integration
async def test_each_acquisition_gets_a_new_token(redis: Redis, keys: Keys) -> None:
    leases = Leases(redis, keys, "worker-a", lease_ms=10_000)
    first = await leases.acquire(0)
    assert first is not None
    await leases.release(first)
    second = await leases.acquire(0)
    assert second is not None
    assert first.token != second.token


@pytest.mark.integration
async def test_fenced_reads_and_commits_refuse_a_lost_lease(redis: Redis, keys: Keys) -> None:
    stream = keys.ingest(0)
    await ensure_group(redis, stream, "g")
    await redis.xadd(stream, {"topic": "a", "ts": "1", "data": "{}"})
    leases = Leases(redis, keys, "worker-a", lease_ms=10_000)
    lease = await leases.acquire(0)
    assert lease is not None
    await leases.release(lease)
    partition = fenced(redis, keys, lease.token)
    with pytest.raises(LeaseLost):
        await partition.read(10)
    with pytest.raises(LeaseLost):
        await partition.claim(10)
    plan = CommitPlan(history=[HistoryWrite(keys.topic("a"), "1-1", ["ts", "1", "data", "{}"])])
    with pytest.raises(LeaseLost):
        await partition.commit(plan)
    # Nothing was handed out or written.
    assert (await redis.xpending(stream, "g"))["pending"] == 0
    assert await redis.exists(keys.topic("a")) == 0


@pytest.mark.integration
async def test_a_wait_and_its_read_go_in_one_round_trip_and_stay_fenced(
    redis: Redis, keys: Keys
) -> None:
    """`wait_and_read`: the entry added during the wait comes back read (handed to this
    consumer) from the one pipelined call; with the script gone from Redis it still
    reads; with the lease lost it raises and hands out nothing."""
    stream = keys.ingest(0)
    leases, lease, partition = await owned(redis, keys)
    empty = await partition.read(10)
    assert empty.entries == []

    async def add_soon() -> str:
        await asyncio.sleep(0.2)
        return text(await redis.xadd(stream, {"topic": "a", "ts": "1", "data": "{}"}))

    adding = asyncio.create_task(add_soon())
    read = await partition.wait_and_read(empty.last_id, 10_000, 10)
    assert [entry.id for entry in read.entries] == [await adding]
    assert (await redis.xpending(stream, "g"))["pending"] == 1

    # Nothing new: the wait runs out and the read finds nothing.
    assert (await partition.wait_and_read(read.entries[0].id, 50, 10)).entries == []
    await redis.script_flush()  # Redis restarted: the read script must be loaded again
    new = text(await redis.xadd(stream, {"topic": "a", "ts": "2", "data": "{}"}))
    assert [e.id for e in (await partition.wait_and_read(read.entries[0].id, 50, 10)).entries] == [
        new
    ]

    await leases.release(lease)
    await redis.xadd(stream, {"topic": "a", "ts": "3", "data": "{}"})
    with pytest.raises(LeaseLost):
        await partition.wait_and_read(new, 50, 10)
    assert (await redis.xpending(stream, "g"))["pending"] == 2  # the third not handed out


async def exec_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


@pytest.mark.integration
@pytest.mark.parametrize("protocol", [2, 3])
async def test_the_read_after_a_commit_goes_without_lua_and_stays_fenced(
    settings: Settings, keys: Keys, protocol: int
) -> None:
    """After a commit that WATCHed the lease and found it ours, the next read is a
    MULTI/EXEC: it reads (or finds nothing new, and the last id to wait after) while
    nobody has written the lease since; after our own
    renewal (a write) the script reads; after a takeover between the commit and the
    read it raises and hands nothing out, and the new owner reads the entry. The
    worker's client speaks RESP2; another may speak RESP3."""
    redis = Redis.from_url(settings.redis_url, protocol=protocol)
    stream = keys.ingest(0)
    leases, lease, partition = await owned(redis, keys)
    ids = [text(await redis.xadd(stream, {"topic": "a", "ts": "1", "data": "{}"})) for _ in "abc"]
    try:
        await partition.commit(CommitPlan())  # loads the commit script (not WATCHed then)
        first = await partition.read(1)  # nothing committed yet: the script
        await partition.commit(CommitPlan(acks=[e.id for e in first.entries]))
        execs = await exec_calls(redis)
        second = await partition.read(1)
        assert [e.id for e in second.entries] == ids[1:2]
        assert second.entries[0].fields == {b"topic": b"a", b"ts": b"1", b"data": b"{}"}
        assert abs(second.clock_ms - int(ids[1].split("-")[0])) < 60_000
        assert await exec_calls(redis) == execs + 1

        await partition.commit(CommitPlan(acks=[e.id for e in second.entries]))
        assert await leases.renew([lease]) == []  # PEXPIRE: a write of the lease
        third = await partition.read(1)
        assert [e.id for e in third.entries] == ids[2:3]

        await partition.commit(CommitPlan(acks=[e.id for e in third.entries]))
        execs = await exec_calls(redis)
        empty = await partition.read(1)  # nothing new: wait for entries after the last
        assert (empty.entries, empty.last_id) == ([], ids[2])
        assert await exec_calls(redis) == execs + 1

        await partition.commit(CommitPlan())
        last = text(await redis.xadd(stream, {"topic": "a", "ts": "2", "data": "{}"}))
        await redis.set(keys.lease(0), "worker-b#1")  # taken over (after an expiry)
        with pytest.raises(LeaseLost):
            await partition.read(10)
        assert (await redis.xpending(stream, "g"))["pending"] == 0
        await redis.xreadgroup("g", "worker-b#1", {stream: ">"}, count=10)
        pending = await redis.xpending_range(stream, "g", "-", "+", 10)
        assert [(p["message_id"], p["consumer"]) for p in pending] == [
            (last.encode(), b"worker-b#1")
        ]
    finally:
        await partition.close()
        await redis.aclose()


@pytest.mark.integration
async def test_membership_lists_live_workers(redis: Redis, keys: Keys) -> None:
    a = Membership(redis, keys, "worker-a", ttl_ms=10_000)
    b = Membership(redis, keys, "worker-b", ttl_ms=10_000)
    assert await a.heartbeat() == ["worker-a"]
    assert await b.heartbeat() == ["worker-a", "worker-b"]
    await a.leave()
    assert await b.heartbeat() == ["worker-b"]
    # A heartbeat that expired is dropped by the next one.
    gone = Membership(redis, keys, "worker-gone", ttl_ms=-1)
    await gone.heartbeat()
    assert await b.heartbeat() == ["worker-b"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("partitions", "workers", "shares"),
    [
        (4, 1, [4]),
        (4, 2, [2, 2]),
        (4, 3, [2, 1, 1]),
        (4, 5, [1, 1, 1, 1, 0]),
        (16, 3, [6, 5, 5]),
    ],
)
def test_fair_shares_add_up_to_the_partitions(
    partitions: int, workers: int, shares: list[int]
) -> None:
    alive = [f"w{i}" for i in range(workers)]
    assert [fair_share(w, alive, partitions) for w in alive] == shares


@pytest.mark.unit
def test_a_worker_missing_from_the_list_counts_itself() -> None:
    assert fair_share("w9", ["w0"], 4) == 2
