"""Session records in Redis (realtime/delivery/sessions.py): a live session's record is
a checkpoint to replay the recovery log from, not rewritten on every change, and a
recovery from it (record + log, as `realtime.web.recovery` reads them) gives exactly
what the client got, from the newest checkpoint or an older one."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.streamids import StreamId
from realtime.delivery.recovery import (
    LIVE,
    POSITION,
    SUBSCRIBE,
    Offset,
    Recorder,
    load_state,
    replay,
    resolve,
)
from realtime.delivery.sessions import SessionStore

pytestmark = pytest.mark.integration


async def recovered(store: SessionStore, pid: str, offset: str) -> dict[str, StreamId | None]:
    """The positions a client of `pid` at `offset` gets back."""
    record = await store.load(pid)
    assert record is not None
    picked = resolve(record, Offset.parse(offset))
    assert picked is not None
    checkpoint, upto = picked
    chunks = await store.log(checkpoint["e"], checkpoint["a"], None)
    assert chunks is not None
    state = load_state(checkpoint["t"], checkpoint.get("w", ()))
    state = replay(state, checkpoint["c"], checkpoint["n"], chunks, upto)
    return {t: s.pos for t, s in state.items()}


async def test_a_live_record_is_a_checkpoint_the_log_moves_on(
    redis: Redis, settings: Settings
) -> None:
    positions: dict[tuple[str, str], StreamId] = {}
    recorder = Recorder(lambda sid, topic: positions.get((sid, topic)))
    store = SessionStore(redis, Keys.of(settings), recorder, 120.0, lines_per_round=25)

    def fanout(topic: str, last: StreamId) -> str:
        offset = recorder.shared(topic, last)
        recorder.handed_out()
        return offset

    async def record() -> dict[str, Any]:
        raw = await store.load("p1")
        assert raw is not None
        return raw

    recorder.connect("s1", "p1", {}, None)
    for topic in ("a", "b"):
        recorder.changed("s1", SUBSCRIBE, topic, None, None)
        recorder.changed("s1", POSITION, topic, (1, 0), None)
        recorder.changed("s1", LIVE, topic, (1, 0), None)
    recorder.shared("other", (1, 0))  # a topic it does not follow
    await store.flush()
    first = await record()
    # Its positions move with every frame; its record stays as it was, while the log
    # has grown less than a round's worth...
    offsets = []
    for i in range(2, 12):
        offsets.append(fanout("a", (i, 0)))
        fanout("other", (i, 0))
        await store.flush()
    assert await record() == first
    assert await recovered(store, "p1", offsets[-1]) == {"a": (11, 0), "b": (1, 0)}
    assert await recovered(store, "p1", offsets[3]) == {"a": (5, 0), "b": (1, 0)}
    # ...then it is written again, and a client behind its newest checkpoint recovers
    # from the one before it.
    for i in range(12, 17):  # the 25th entry since the first round: one more
        offsets.append(fanout("b", (i, 0)))
        await store.flush()
    moved = await record()
    assert moved["cp"]["n"] > first["cp"]["n"]
    assert moved["cp"]["t"] == {"a": ["11-0", True, None], "b": ["16-0", True, None]}
    latest = fanout("a", (17, 0))
    await store.flush()
    assert await record() == moved
    assert await recovered(store, "p1", latest) == {"a": (17, 0), "b": (16, 0)}
    assert await recovered(store, "p1", offsets[10]) == {"a": (11, 0), "b": (12, 0)}
    assert await recovered(store, "p1", offsets[2]) == {"a": (4, 0), "b": (1, 0)}
    await store.aclose()


async def test_log_writes_go_on_after_their_connection_is_killed(
    redis: Redis, settings: Settings
) -> None:
    """Log writes have a connection of their own: killed, the write on it fails and its
    entries go with the next write, on a new connection, in order."""
    recorder = Recorder(lambda sid, topic: None)
    store = SessionStore(redis, Keys.of(settings), recorder, 120.0)

    async def write(topic: str, n: int) -> None:
        recorder.shared(topic, (n, 0))
        recorder.handed_out()
        await store.write_log()

    await write("a", 1)  # (with the log's expiry: through the client)
    await write("b", 2)  # on the log's own connection
    assert store._log_conn is not None
    await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    with pytest.raises((RedisConnectionError, OSError)):
        await write("c", 3)
    await write("d", 4)
    await store.aclose()
    assert store._log_conn is None
    chunks = await store.log(recorder.epoch, "0-0", None)
    assert chunks is not None
    assert [[line.split()[2] for line in lines] for _, lines in chunks] == [
        ["a"],
        ["b"],
        ["c", "d"],
    ]
