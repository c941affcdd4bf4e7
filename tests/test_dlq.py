"""`realtime dlq list|replay|drop` against real Redis, on entries a real worker loop gave up on."""

from __future__ import annotations

import asyncio
import io

import pytest
from redis.asyncio import Redis

from processors.worker.consumer import Consumer
from processors.worker.dlq import run_dlq
from realtime.cli import build_parser
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.wire import UpdateEncoder
from realtime.ingest.api import IngestWriter

pytestmark = pytest.mark.integration


@pytest.fixture
def fanout(settings: Settings) -> UpdateEncoder:
    return UpdateEncoder.of(settings)


async def dlq(settings: Settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = await run_dlq(settings, build_parser().parse_args(["dlq", *argv]), out)
    return status, out.getvalue()


async def drain(redis: Redis, fanout: UpdateEncoder, settings: Settings) -> None:
    await asyncio.wait_for(Consumer(redis, fanout, settings).run(asyncio.Event(), burst=True), 20)


async def test_list_shows_replay_requeues_and_drop_deletes(
    redis: Redis, settings: Settings, fanout: UpdateEncoder
) -> None:
    settings = settings.with_overrides(max_attempts=1)
    keys = Keys(settings.prefix)
    await redis.set(keys.topic("poison"), "not a stream")
    writer = IngestWriter(redis, settings)
    [first] = await writer.append([{"topic": "poison", "data": {"n": 1}}])
    [second] = await writer.append([{"topic": "poison", "data": {"n": 2}}])
    await drain(redis, fanout, settings)

    status, text = await dlq(settings, "list")
    assert status == 0
    assert f" {first}  attempts=1" in text
    assert "WRONGTYPE" in text
    assert 'data={"n":1}' in text
    assert "2 shown, 2 in" in text
    status, text = await dlq(settings, "list", "--json")
    letters = [jsoncodec.loads(line) for line in text.splitlines()]
    assert [letter["entry_id"] for letter in letters] == [first, second]
    assert letters[0]["entry"] == {
        "topic": "poison",
        "ts": letters[0]["entry"]["ts"],
        "data": '{"n":1}',
    }

    # The cause is fixed; the first is replayed, the second dropped.
    await redis.delete(keys.topic("poison"))
    status, text = await dlq(settings, "replay", letters[0]["id"])
    assert status == 0
    assert text.startswith(f"replayed {letters[0]['id']} as {keys.ingest(0)[:-1]}")
    assert (await dlq(settings, "drop", "--all")) == (0, "dropped 1\n")
    await drain(redis, fanout, settings)

    [(_, fields)] = await redis.xrange(keys.topic("poison"))
    assert jsoncodec.loads(fields[b"data"]) == {"n": 1}
    assert await redis.xlen(keys.dead_letters()) == 0


async def test_unknown_ids_and_missing_arguments_are_errors(settings: Settings) -> None:
    assert (await dlq(settings, "replay"))[0] == 2
    assert (await dlq(settings, "drop", "1-1"))[0] == 1
    assert await dlq(settings, "list") == (
        0,
        "0 shown, 0 in " + Keys(settings.prefix).dead_letters() + "\n",
    )
