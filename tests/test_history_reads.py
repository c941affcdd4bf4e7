"""History reads against a real Redis (realtime/delivery/history.py): the reads of
several topics asked for in one turn (a connect storm's subscribes) go in one round
trip and answer each topic as its own read would."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.streamids import parse_id
from realtime.delivery.history import Extent, HistoryReader, decode_event

pytestmark = pytest.mark.integration

TOPICS = ["h.a", "h.b", "h.c"]


async def filled(redis: Redis, settings: Settings) -> tuple[HistoryReader, dict[str, list[str]]]:
    keys = Keys.of(settings)
    ids: dict[str, list[str]] = {}
    for n, topic in enumerate(TOPICS):
        ids[topic] = [
            (await redis.xadd(keys.topic(topic), {"ts": str(i), "data": f'{{"n":{i}}}'})).decode()
            for i in range(5 + n)
        ]
    return HistoryReader(redis, keys, 1000), ids


async def transactions(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_multi", {}).get("calls", 0))


async def test_reads_of_several_topics_in_one_turn_answer_each_as_alone(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, ids = await filled(redis, settings)
    alone = [await reader.latest(t, 3) for t in TOPICS]
    assert [[e["id"] for e in page] for page in alone] == [ids[t][-3:] for t in TOPICS]
    since = {t: parse_id(ids[t][1]) for t in TOPICS}
    alone_points = [await reader.resume(t, since[t], 2, 2) for t in TOPICS]

    async def not_alone(*_: object) -> None:
        raise AssertionError("a topic read alone")

    monkeypatch.setattr(reader._latest, "_read", not_alone)
    together = await asyncio.gather(*(reader.latest(t, 3) for t in TOPICS))
    assert together == alone
    before = await transactions(redis)
    together_points = await asyncio.gather(*(reader.resume(t, since[t], 2, 2) for t in TOPICS))
    assert await transactions(redis) == before + 1  # one MULTI for the three topics
    assert [dataclasses.asdict(p) for p in together_points] == [
        dataclasses.asdict(p) for p in alone_points
    ]
    for topic, point in zip(TOPICS, together_points, strict=True):
        assert point.recovered
        assert [e["id"] for e in point.page] == ids[topic][2:4]
        assert [e["id"] for e in point.latest] == ids[topic][-2:]

    after = {t: parse_id(ids[t][0]) for t in TOPICS}
    together_after = await asyncio.gather(*(reader.after(t, after[t], 2) for t in TOPICS))
    assert [[e["id"] for e in page] for page in together_after] == [ids[t][1:3] for t in TOPICS]


async def test_reads_answer_as_redis_py_parses_history_even_when_rewritten(
    redis: Redis, settings: Settings
) -> None:
    """The reads take XRANGE/XREVRANGE replies unparsed and decode each entry once
    (`Decoded`): they answer as decoding redis-py's parsed reply does, and a stream
    deleted and written again under the same ids answers with what it holds now."""
    keys = Keys.of(settings)
    reader = HistoryReader(redis, keys, 1000)
    key = keys.topic("h.rewritten")

    async def write(data: str) -> list[str]:
        await redis.delete(key)
        return [
            (await redis.xadd(key, {"ts": str(n), "data": data % n}, id=f"5-{n + 1}")).decode()
            for n in range(4)
        ]

    def parsed(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[dict[str, object]]:
        return [decode_event("h.rewritten", i, f) for i, f in entries]

    ids = await write('{"n":%d}')
    expected = parsed(await redis.xrange(key))
    assert await reader.latest("h.rewritten", 4) == expected
    assert await reader.after("h.rewritten", parse_id(ids[0]), 10) == expected[1:]
    point = await reader.resume("h.rewritten", parse_id(ids[1]), 10, 2)
    assert (point.recovered, point.page, point.latest) == (True, expected[2:], expected[2:])
    page, _ = await reader.range("h.rewritten", (5, 0), (6, 0), 10, descending=True)
    assert page == expected[::-1]

    await write('{"again":%d}')
    rewritten = parsed(await redis.xrange(key))
    assert rewritten != expected
    assert await reader.latest("h.rewritten", 4) == rewritten
    assert (await reader.resume("h.rewritten", parse_id(ids[1]), 10, 1)).page == rewritten[2:]
    # The replies are taken as Redis sends them (redis-py's parse of each entry into a
    # dict was a fifth of a storm's reads); a redis-py whose pipelines no longer honour
    # their own callbacks fails here, not silently slower.
    async with reader._pipeline(transaction=False) as pipe:
        pipe.xrange(key, count=1)
        pipe.xlen(key)
        (raw,), length = await pipe.execute()
    assert raw == [ids[0].encode(), [b"ts", b"0", b"data", b'{"again":0}']]
    assert length == 4  # other replies parsed as ever


async def test_the_extent_is_what_xrange_and_xlen_say_trimmed_emptied_or_missing(
    redis: Redis, settings: Settings
) -> None:
    """`extent` is read from XINFO STREAM alone: its oldest entry and length are the
    first entry XRANGE returns and XLEN, however the stream was trimmed."""
    keys = Keys.of(settings)
    reader = HistoryReader(redis, keys, 1000)
    key = keys.topic("h.extent")
    assert await reader.extent("h.extent") == Extent(None, 0, 0)  # never written
    for n in range(6):
        await redis.xadd(key, {"ts": str(n), "data": "0"}, id=f"7-{n + 1}")

    async def expected() -> Extent:
        first = await redis.xrange(key, count=1)
        oldest = parse_id(first[0][0]) if first else None
        return Extent(oldest, await redis.xlen(key), 6)

    assert await reader.extent("h.extent") == await expected() == Extent((7, 1), 6, 6)
    await redis.xtrim(key, minid="7-4", approximate=False)
    assert await reader.extent("h.extent") == await expected() == Extent((7, 4), 3, 6)
    point = await reader.resume("h.extent", (7, 2), 10, 1)
    assert not point.recovered  # 7-3 was trimmed
    assert (await reader.resume("h.extent", (7, 4), 10, 1)).recovered
    await redis.xtrim(key, maxlen=0, approximate=False)
    assert await reader.extent("h.extent") == await expected() == Extent(None, 0, 6)


async def test_a_resume_returns_the_same_page_object_while_it_holds_the_same_events(
    redis: Redis, settings: Settings
) -> None:
    """Resumes of one `since` in a storm return one page object while nothing changed
    (its replay is then encoded once, `catch_up.PageJson`); a new event, or the stream
    written again, gives a new page with what Redis holds."""
    keys = Keys.of(settings)
    reader = HistoryReader(redis, keys, 1000)
    key = keys.topic("h.same")
    for n in range(3):
        await redis.xadd(key, {"ts": str(n), "data": str(n)}, id=f"9-{n + 1}")
    first = (await reader.resume("h.same", (9, 1), 10, 1)).page
    again = (await reader.resume("h.same", (9, 1), 10, 1)).page
    assert again is first
    assert [e["id"] for e in first] == ["9-2", "9-3"]
    await redis.xadd(key, {"ts": "3", "data": "3"}, id="9-4")
    grown = (await reader.resume("h.same", (9, 1), 10, 1)).page
    assert grown is not first
    assert grown[:2] == first
    assert [e["id"] for e in grown] == ["9-2", "9-3", "9-4"]
    await redis.delete(key)
    for n in range(4):
        await redis.xadd(key, {"ts": str(n), "data": "-1"}, id=f"9-{n + 1}")
    rewritten = (await reader.resume("h.same", (9, 1), 10, 1)).page
    assert [e["data"] for e in rewritten] == [-1, -1, -1]
