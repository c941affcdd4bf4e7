"""Session records and the recovery log as `SessionStore` writes them to a real Redis
(realtime/delivery/sessions.py): each record only where its connection owns the session
(or claims it), with its TTL, and a batch of them in one script call; the log's writes
one in flight at a time, a failed one written again in order."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.delivery.recovery import Checkpoint, Recorder
from realtime.delivery.sessions import SessionStore

pytestmark = pytest.mark.integration


def store(redis: Redis, settings: Settings) -> SessionStore:
    return SessionStore(redis, Keys.of(settings), Recorder(lambda sid, topic: None), 60.0)


def logging_store(redis: Redis, settings: Settings) -> tuple[SessionStore, str]:
    """A store and the key of its recovery log."""
    sessions = store(redis, settings)
    return sessions, Keys.of(settings).recovery_log(sessions.recorder.epoch)


async def owner_and_record(redis: Redis, key: str) -> tuple[str | None, object]:
    owner, record = await redis.hmget(key, "o", "s")  # type: ignore[misc]
    return (
        None if owner is None else owner.decode(),
        None if record is None else jsoncodec.loads(record),
    )


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_batch_of_records_is_one_script_call_and_respects_owners(
    redis: Redis, settings: Settings
) -> None:
    sessions = store(redis, settings)
    keys = Keys.of(settings)
    await redis.hset(keys.session("taken"), mapping={"o": "other:1", "s": '"theirs"'})
    await redis.hset(keys.session("mine"), mapping={"o": "e:2", "s": '"old"'})
    batch = [
        Checkpoint("new", "e:1", {"n": 1}, False),
        Checkpoint("taken", "e:3", {"n": 3}, False),
        Checkpoint("mine", "e:2", {"n": 2}, True),
    ]
    await sessions._write_records(batch[:1])  # the script is loaded by now
    before = await evalsha_calls(redis)
    await sessions._write_records(batch)
    assert await evalsha_calls(redis) == before + 1
    assert await owner_and_record(redis, keys.session("new")) == ("e:1", {"n": 1})
    assert await owner_and_record(redis, keys.session("taken")) == ("other:1", "theirs")
    assert await owner_and_record(redis, keys.session("mine")) == ("e:2", {"n": 2})
    # A closed connection's record lives a window; a live one's a refresh longer.
    assert 0 < await redis.pttl(keys.session("mine")) <= sessions.window_ms
    assert sessions.window_ms < await redis.pttl(keys.session("new"))
    assert await redis.pttl(keys.session("taken")) == -1  # not touched

    await sessions.claim(Checkpoint("taken", "e:3", {"n": 4}, False))
    assert await owner_and_record(redis, keys.session("taken")) == ("e:3", {"n": 4})


async def test_records_are_written_again_after_redis_forgot_the_script(
    redis: Redis, settings: Settings
) -> None:
    sessions = store(redis, settings)
    keys = Keys.of(settings)
    await sessions._write_records([Checkpoint("a", "e:1", {"n": 1}, False)])
    await redis.script_flush()  # a restarted or failed-over Redis
    await sessions._write_records([Checkpoint("a", "e:1", {"n": 2}, False)])
    assert await owner_and_record(redis, keys.session("a")) == ("e:1", {"n": 2})


async def log(redis: Redis, key: str) -> list[tuple[int, int]]:
    """The log's writes: (first entry's number, how many entries)."""
    return [
        (int(fields[b"a"]), len(fields[b"e"].split(b"\n"))) for _, fields in await redis.xrange(key)
    ]


async def test_a_log_write_in_flight_is_answered_before_the_next_and_a_failed_one_goes_again(
    redis: Redis, settings: Settings
) -> None:
    sessions, key = logging_store(redis, settings)
    recorder = sessions.recorder
    recorder.shared("t", (1, 0))
    await sessions.write_log()  # sent, before a hand-out; not waited for
    recorder.shared("t", (2, 0))
    recorder.shared("u", (2, 1))
    await sessions.write_log()  # the first one's answer is read before this is sent
    await sessions.flush()  # answered
    assert await log(redis, key) == [(1, 1), (2, 2)]
    assert await redis.pttl(key) > 0  # its first write set the log's lifetime

    await redis.delete(key)
    await redis.set(key, "not a stream")  # every XADD to it fails (WRONGTYPE)
    recorder.shared("t", (3, 0))
    await sessions.write_log()
    recorder.shared("t", (4, 0))  # made while the failing write is in flight
    with pytest.raises(ResponseError):
        await sessions.write_log()  # reads the failure first: nothing more is sent
    await redis.delete(key)
    await sessions.flush()
    assert await log(redis, key) == [(4, 2)]  # both, in order, in one write
    recorder.shared("t", (5, 0))
    await sessions.flush()
    assert await log(redis, key) == [(4, 2), (6, 1)]


async def test_a_log_write_on_a_connection_redis_closed_goes_again_on_a_new_one(
    redis: Redis, settings: Settings
) -> None:
    sessions, key = logging_store(redis, settings)
    recorder = sessions.recorder
    recorder.shared("t", (1, 0))
    await sessions.flush()
    port = sessions._connection._writer.get_extra_info("sockname")[1]
    assert await redis.client_kill_filter(addr=f"127.0.0.1:{port}") == 1  # (a restart)
    recorder.shared("t", (2, 0))
    await sessions.write_log()  # sent on the dead connection, which no one knows yet
    with pytest.raises(RedisConnectionError):
        await sessions.flush()
    await sessions.flush()
    assert await log(redis, key) == [(1, 1), (2, 1)]
