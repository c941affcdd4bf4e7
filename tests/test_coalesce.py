"""Shared reads (realtime/delivery/coalesce.py): the reads of one key asked for together
are one; a read already sent is never joined (the no-gap argument of a subscribe's
history read rests on it); failures reach every caller."""

from __future__ import annotations

import asyncio

import pytest

from realtime.delivery.coalesce import Coalesced

pytestmark = pytest.mark.unit


class Reads:
    """A read that waits until released, recording what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, key: str, size: int) -> list[int]:
        self.asked.append((key, size))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return list(range(size))


async def test_calls_of_one_turn_share_one_read_of_the_largest_size() -> None:
    reads = Reads()
    read = Coalesced(reads)
    calls = [asyncio.ensure_future(read("a", n)) for n in (1, 10, 3)]
    other = asyncio.ensure_future(read("b", 2))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    reads.release.set()
    answers = await asyncio.gather(*calls, other)
    assert sorted(reads.asked) == [("a", 10), ("b", 2)]
    assert answers[0] == list(range(10))
    assert answers[0] is answers[1]
    assert answers[3] == [0, 1]


async def test_a_read_already_sent_is_not_joined_the_next_waits_for_it() -> None:
    reads = Reads()
    read = Coalesced(reads)
    first = asyncio.ensure_future(read("a", 1))
    for _ in range(3):  # the call, the send on the next turn, the read's start
        await asyncio.sleep(0)
    assert reads.asked == [("a", 1)]
    # Asked after the first read was sent: a read of their own, sent once it ended.
    later = [asyncio.ensure_future(read("a", 2)) for _ in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert reads.asked == [("a", 1)]
    reads.release.set()
    assert await first == [0]
    assert await asyncio.gather(*later) == [[0, 1]] * 3
    assert reads.asked == [("a", 1), ("a", 2)]


async def test_a_failed_read_fails_its_callers_and_the_next_read_is_made() -> None:
    reads = Reads()
    reads.fail = ConnectionError("redis is away")
    read = Coalesced(reads)
    calls = [asyncio.ensure_future(read("a", 1)) for _ in range(2)]
    await asyncio.sleep(0)
    reads.release.set()
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        assert isinstance(outcome, ConnectionError)
    reads.fail = None
    assert await read("a", 1) == [0]


async def test_a_caller_that_gives_up_leaves_the_read_to_the_others() -> None:
    reads = Reads()
    read = Coalesced(reads)
    leaving = asyncio.ensure_future(read("a", 1))
    staying = asyncio.ensure_future(read("a", 1))
    await asyncio.sleep(0)
    leaving.cancel()
    reads.release.set()
    assert await staying == [0]
    assert leaving.cancelled()


class ManyReads(Reads):
    """`Reads`, and reads of several keys at once (`Coalesced`'s `many`)."""

    def __init__(self) -> None:
        super().__init__()
        self.together: list[list[tuple[str, int]]] = []

    async def many(self, asked: list[tuple[str, int]]) -> list[list[int]]:
        self.together.append(asked)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [[ord(key)] * size for key, size in asked]


async def test_reads_of_several_keys_in_one_turn_go_in_one_call() -> None:
    reads = ManyReads()
    read = Coalesced(reads, reads.many)
    calls = [asyncio.ensure_future(read(key, n)) for key, n in (("a", 1), ("b", 2), ("a", 3))]
    for _ in range(3):
        await asyncio.sleep(0)
    assert reads.together == [[("a", 3), ("b", 2)]]
    # Asked while that call is out: `a` waits for it (it is never joined); `c` goes now.
    later = asyncio.ensure_future(read("a", 1))
    alone = asyncio.ensure_future(read("c", 1))
    for _ in range(3):
        await asyncio.sleep(0)
    assert reads.asked == [("c", 1)]  # one key due: the single read
    reads.release.set()
    assert await asyncio.gather(*calls) == [[97] * 3, [98] * 2, [97] * 3]
    assert await alone == [0]
    assert await later == [0]
    assert reads.asked == [("c", 1), ("a", 1)]
    assert len(reads.together) == 1


async def test_a_failed_call_of_several_keys_fails_every_caller() -> None:
    reads = ManyReads()
    reads.fail = ConnectionError("redis is away")
    read = Coalesced(reads, reads.many)
    calls = [asyncio.ensure_future(read(key, 1)) for key in "ab"]
    await asyncio.sleep(0)
    reads.release.set()
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        assert isinstance(outcome, ConnectionError)
    reads.fail = None
    assert await asyncio.gather(read("a", 1), read("b", 1)) == [[97], [98]]


async def test_with_gather_reads_go_at_most_once_per_gather_together() -> None:
    """`gather_s`: the first read after a quiet spell goes at the next turn; what is
    asked within `gather_s` of a send waits and goes in one call, still after every
    caller asked (never joining a read already sent)."""
    reads = ManyReads()
    reads.release.set()
    loop = asyncio.get_running_loop()
    read = Coalesced(reads, reads.many, gather_s=0.05)
    began = loop.time()
    assert await read("a", 1) == [0]  # alone: the single read
    assert loop.time() - began < 0.04  # quiet: at once
    sent = loop.time()
    calls = [asyncio.ensure_future(read(key, 1)) for key in "ab"]
    await asyncio.sleep(0.01)
    calls.append(asyncio.ensure_future(read("c", 2)))  # asked later, within the gather
    await asyncio.sleep(0.01)
    assert reads.together == []  # held back
    assert await asyncio.gather(*calls) == [[97], [98], [99, 99]]
    assert loop.time() - sent >= 0.049
    assert reads.together == [[("a", 1), ("b", 1), ("c", 2)]]
    await asyncio.sleep(0.06)
    began = loop.time()
    assert await read("d", 1) == [0]
    assert loop.time() - began < 0.04  # quiet again: at once
