"""Session records as `SessionStore` writes them to a real Redis (realtime/delivery/
sessions.py): each only where its connection owns the session (or claims it), with its
TTL, and a batch of them in one script call."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.delivery.recovery import Checkpoint, Recorder
from realtime.delivery.sessions import SessionStore

pytestmark = pytest.mark.integration


def store(redis: Redis, settings: Settings) -> SessionStore:
    return SessionStore(redis, Keys.of(settings), Recorder(lambda sid, topic: None), 60.0)


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
