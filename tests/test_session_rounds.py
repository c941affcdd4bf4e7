"""The session store's round of checkpoints against a real Redis: written a slice per
write, each slice right after the one before (not a checkpoint interval later), with
the event loop running other work in between (`realtime/delivery/sessions.py`)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.delivery.recovery import Checkpoint, Recorder, TopicState
from realtime.delivery.sessions import ROUND_SLICE, SessionStore
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

CONNECTIONS = ROUND_SLICE * 2 + 20


async def test_a_round_is_written_in_slices_with_the_loop_running_between(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys.of(settings)
    recorder = Recorder(lambda sid, topic: None)
    for i in range(CONNECTIONS):
        recorder.connect(f"s{i}", f"p{i}", {"a": TopicState((1, 0), True)}, None)
    # The log grew past a round's worth: the writer's next turn (kicked) starts a round.
    store = SessionStore(redis, keys, recorder, 120.0, lines_per_round=1)
    await store.flush(final=True)  # the first records, all at once
    recorder.shared("a", (2, 0))  # every connection's position moves
    recorder.handed_out()
    recorder.take_pending()

    ticks = 0  # turns of another task of the loop
    slices: list[tuple[int, int]] = []  # (ticks then, records made)
    made = recorder.checkpoints

    def counted(**kwargs: object) -> list[Checkpoint]:
        out = made(**kwargs)  # type: ignore[arg-type]
        if out:  # only the round itself brings the next slice (no refresh is due for 30 s)
            slices.append((ticks, len(out)))
        return out

    monkeypatch.setattr(recorder, "checkpoints", counted)

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def moved() -> bool:
        for i in range(CONNECTIONS):
            raw = await redis.hget(keys.session(f"p{i}"), "s")
            if raw is None or jsoncodec.loads(raw)["cp"]["t"]["a"][0] != "2-0":
                return False
        return True

    ticker = asyncio.create_task(tick())
    store.start()
    store.kick()
    try:
        await eventually(moved, "every record at the new position", timeout=10.0)
    finally:
        ticker.cancel()
        await store.aclose()
    assert [n for _, n in slices] == [ROUND_SLICE, ROUND_SLICE, 20]
    assert slices[0][0] < slices[1][0] < slices[2][0]  # the loop ran between them
