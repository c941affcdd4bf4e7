"""Topic history: each topic's events in `rt:topic:{topic}`, with their event ids.

Written with explicit ids, so a redelivered entry cannot create a second history entry:
Redis refuses an id that is not above the stream's last one, and we treat that as
"already written". Bounded with an approximate MAXLEN.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from processors.transform import TopicEvent
from realtime import jsoncodec
from realtime.keys import Keys

_DUPLICATE = "equal or smaller"


def history_fields(event: TopicEvent) -> dict[str, bytes | str]:
    return {"ts": str(event.ts), "data": jsoncodec.dumpb(event.data)}


class HistoryWriter:
    def __init__(self, redis: Redis, keys: Keys, maxlen: int) -> None:
        self.redis = redis
        self.keys = keys
        self.maxlen = maxlen

    async def append(self, events: list[TopicEvent]) -> int:
        """Append in one round trip; returns how many were new (not duplicates)."""
        if not events:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(
                    self.keys.topic(event.topic),
                    history_fields(event),  # type: ignore[arg-type]
                    id=event.id,
                    maxlen=self.maxlen,
                    approximate=True,
                )
            results = await pipe.execute(raise_on_error=False)
        written = 0
        for result in results:
            if isinstance(result, ResponseError):
                if _DUPLICATE not in str(result):
                    raise result
            elif isinstance(result, BaseException):
                raise result
            else:
                written += 1
        return written
