"""Topic history written directly, as the worker writes it, for tests that need a given
history (e.g. one whose oldest events were trimmed) without running a worker."""

from __future__ import annotations

from redis.asyncio import Redis

from processors.pipelines.transform import TopicEvent
from processors.worker.history_writes import history_write
from realtime.core.keys import Keys
from realtime.core.settings import Settings


async def write_history(redis: Redis, settings: Settings, topic: str, ms: range) -> list[str]:
    """Events with ids `<ms>-0`, ts `ms` and data `{"n": ms}`; returns their ids."""
    written = []
    for n in ms:
        write = history_write(Keys(settings.prefix), TopicEvent(topic, f"{n}-0", n, {"n": n}))
        fields = dict(zip(write.fields[::2], write.fields[1::2], strict=True))
        await redis.xadd(write.key, fields, id=write.id)  # type: ignore[arg-type]
        written.append(write.id)
    return written
