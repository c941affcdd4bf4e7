"""Dead letters: ingest entries the worker gave up on, kept with their error.

The partition moves on; nothing is silently dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from redis.asyncio import Redis

from realtime import jsoncodec
from realtime.keys import Keys

logger = logging.getLogger(__name__)

DEAD_LETTER_MAXLEN = 100_000


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class DeadLetters:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.key = keys.dead_letters()

    async def add(
        self, stream: str, entry_id: str, fields: Mapping[bytes | str, bytes | str], error: str
    ) -> None:
        logger.error("dead-lettering %s %s: %s", stream, entry_id, error)
        record = {
            "stream": stream,
            "id": entry_id,
            "error": error,
            "fields": jsoncodec.dumps({_text(k): _text(v) for k, v in fields.items()}),
            "at": str(int(time.time() * 1000)),
        }
        await self.redis.xadd(
            self.key,
            record,  # type: ignore[arg-type]
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
