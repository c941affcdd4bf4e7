"""Consumer groups on the ingest streams: creation and trimming of acknowledged entries."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import ResponseError

logger = logging.getLogger(__name__)


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create the group (and the stream) reading from the start; BUSYGROUP means done."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
        logger.info("created consumer group %s on %s", group, stream)
    except ResponseError as exc:
        if not str(exc).startswith("BUSYGROUP"):
            raise


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"


async def trim_acknowledged(redis: Redis, stream: str, group: str) -> None:
    """Drop entries every consumer of the group has acknowledged.

    Keeps everything from the oldest pending entry on, or, with nothing pending,
    everything after the group's last delivered id.
    """
    groups = await redis.xinfo_groups(stream)
    info = next((g for g in groups if _name(g["name"]) == group), None)
    if info is None:
        return
    pending = await redis.xpending(stream, group)
    if pending["pending"]:
        min_id = _name(pending["min"])
    else:
        last = _name(info["last-delivered-id"])
        if last == "0-0":
            return
        min_id = _next_id(last)
    await redis.xtrim(stream, minid=min_id, approximate=False)


def _name(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_REMOVE_IF_IDLE = """
local removed = 0
for i = 2, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[i]) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""


async def remove_dead_consumers(
    redis: Redis, stream: str, group: str, alive: set[str], min_idle_ms: int
) -> int:
    """Delete the group's consumers that belong to no live worker, have been idle for
    `min_idle_ms` and have nothing pending (their entries were claimed by the new owner).
    The pending check and the delete run together in Redis, so nothing pending is lost."""
    consumers = await redis.xinfo_consumers(stream, group)
    dead = [
        _name(c["name"])
        for c in consumers
        if _name(c["name"]) not in alive and int(c["idle"]) >= min_idle_ms
    ]
    if not dead:
        return 0
    removed = await redis.eval(_REMOVE_IF_IDLE, 1, stream, group, *dead)
    if removed:
        logger.info("removed %d consumer(s) of dead workers from %s", removed, stream)
    return int(removed)
