"""Redis Cluster: the part of a partition's commit that lies in other hash slots.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.crc import key_slot

from realtime.core import jsoncodec
from realtime.core.text import text

if TYPE_CHECKING:
    from processors.worker.fencing import CommitPlan, HistoryWrite

# KEYS: one key of the slot (routes the script). ARGV: history maxlen, then one JSON
# document {"h": [[key, id, [field, value, ...], maxlen, minid], ...] (as in fencing.py),
# "p": [[channel, payload], ...],
# "r": [[ingest stream, [field, value, ...]], ...]}.
_ELSEWHERE = """
local batch = cjson.decode(ARGV[2])
for e, write in ipairs(batch.h) do
  local cap = write[4]
  if cap == 0 then cap = ARGV[1] end
  local r = redis.pcall('XADD', write[1], 'MAXLEN', '~', cap, write[2], unpack(write[3]))
  if type(r) == 'table' and r.err and not string.find(r.err, 'equal or smaller', 1, true) then
    if string.sub(r.err, 1, 9) == 'WRONGTYPE' then return {e, r.err} end
    return redis.error_reply(r.err)
  end
  if write[5] ~= '' then redis.call('XTRIM', write[1], 'MINID', '~', write[5]) end
end
for _, publish in ipairs(batch.p) do
  redis.call('SPUBLISH', publish[1], publish[2])
end
for _, routed in ipairs(batch.r) do
  redis.call('XADD', routed[1], '*', unpack(routed[2]))
end
return {0}
"""


def slot_of(name: str) -> int:
    return key_slot(name.encode())


@dataclass
class SlotWrites:
    history: list[HistoryWrite] = field(default_factory=list)
    history_index: list[int] = field(default_factory=list)  # each write's index in the plan
    publishes: list[tuple[str, bytes]] = field(default_factory=list)
    routed: list[tuple[str, list[str]]] = field(default_factory=list)

    def any_key(self) -> str:
        names = [w.key for w in self.history] + [c for c, _ in self.publishes]
        return (names + [s for s, _ in self.routed])[0]

    def document(self) -> bytes:
        return jsoncodec.dumpb(
            {
                "h": [w.document() for w in self.history],
                "p": [[channel, payload.decode()] for channel, payload in self.publishes],
                "r": [[stream, fields] for stream, fields in self.routed],
            }
        )


@dataclass
class Split:
    own: CommitPlan  # what stays in the partition's slot: the fenced commit
    history_index: list[int]  # own.history[i] is the plan's history[history_index[i]]
    elsewhere: dict[int, SlotWrites]  # by slot


def split(plan: CommitPlan, own_slot: int) -> Split:
    """Pure: separate the writes outside `own_slot`, keeping each slot's order."""
    elsewhere: dict[int, SlotWrites] = {}
    own_history, history_index = [], []
    for index, write in enumerate(plan.history):
        slot = slot_of(write.key)
        if slot == own_slot:
            own_history.append(write)
            history_index.append(index)
        else:
            writes = elsewhere.setdefault(slot, SlotWrites())
            writes.history.append(write)
            writes.history_index.append(index)
    own_publishes = []
    for channel, payload in plan.publishes:
        slot = slot_of(channel)
        if slot == own_slot:
            own_publishes.append((channel, payload))
        else:
            elsewhere.setdefault(slot, SlotWrites()).publishes.append((channel, payload))
    own_routed = []
    for stream, fields in plan.routed:
        slot = slot_of(stream)
        if slot == own_slot:
            own_routed.append((stream, fields))
        else:
            elsewhere.setdefault(slot, SlotWrites()).routed.append((stream, fields))
    own = replace(plan, history=own_history, publishes=own_publishes, routed=own_routed)
    return Split(own, history_index, elsewhere)


class OtherSlots:
    """Writes a split's leftovers, one script per slot, all slots at once."""

    def __init__(self, redis: Redis, history_maxlen: int) -> None:
        self.history_maxlen = history_maxlen
        self._script = redis.register_script(_ELSEWHERE)

    async def write(self, elsewhere: dict[int, SlotWrites]) -> tuple[int, str] | None:
        """None, or the first history write (index in the plan, error) whose key holds
        another type."""
        slots = list(elsewhere.values())
        replies = await asyncio.gather(
            *[
                self._script(keys=[writes.any_key()], args=[self.history_maxlen, writes.document()])
                for writes in slots
            ]
        )
        failed = [
            (writes.history_index[int(reply[0]) - 1], text(reply[1]))
            for writes, reply in zip(slots, replies, strict=True)
            if int(reply[0])
        ]
        return min(failed, default=None)
