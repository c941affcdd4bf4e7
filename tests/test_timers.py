"""Unit tests: the shared delay queue behind every connection's ping and connect check."""

from __future__ import annotations

import asyncio

import pytest

from realtime.transport.timers import DelayQueue

pytestmark = pytest.mark.unit


async def test_items_fire_in_order_after_the_delay_and_cancelled_ones_never() -> None:
    fired: list[str] = []
    queue: DelayQueue[str] = DelayQueue(0.05, fired.append)
    loop = asyncio.get_running_loop()
    started = loop.time()
    queue.add("a")
    cancelled = queue.add("b")
    await asyncio.sleep(0.02)
    queue.add("c")
    DelayQueue.cancel(cancelled)
    assert cancelled[1] is None  # the item is no longer held
    done = loop.create_future()
    queue.fire = lambda item: (fired.append(item), item == "c" and done.set_result(None))  # type: ignore[assignment, func-returns-value]
    async with asyncio.timeout(5):
        await done
    assert fired == ["a", "c"]
    assert loop.time() - started >= 0.07  # "c" waited its own full delay
    assert len(queue) == 0


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    fired: list[int] = []
    last = asyncio.Event()

    def fire(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        fired.append(item)
        if item == 2:
            last.set()

    queue: DelayQueue[int] = DelayQueue(0.01, fire)
    for n in range(3):
        queue.add(n)
    async with asyncio.timeout(5):
        await last.wait()
    assert fired == [0, 2]
