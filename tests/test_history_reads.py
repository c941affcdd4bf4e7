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
from realtime.delivery.history import HistoryReader

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
