"""Every Redis operation a partition's owner makes, fenced by its lease.

Each of these runs as one Lua script that first checks the partition's lease still
holds our token, so a worker that lost its lease (paused past its expiry, cut off from
Redis) can neither take entries out of the stream nor write anything for them.

One exception, the read that follows a commit: a script would turn every entry into Lua
tables and back (about a fifth of Redis's work per event, `python -m bench.commit_cost`),
so it is a MULTI/EXEC on a connection of the partition's own, fenced by a WATCH of the
lease sent just before the commit's script (see `read`).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, ConnectionPool
from redis.exceptions import NoScriptError, ResponseError

from processors.worker.slots import OtherSlots, slot_of, split
from processors.worker.unrecorded import Held, Unrecorded
from realtime.core import jsoncodec
from realtime.core.directory import LUA_RECORD, RATE_WINDOW_MS
from realtime.core.keys import Keys
from realtime.core.text import text

Fields = Mapping[bytes | str, bytes | str]
Value = bytes | str | int

_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
"""

_READ = """
local now = redis.call('TIME')
local clock = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                         'STREAMS', KEYS[2], '>')
if reply then return {0, reply[1][2], false, clock} end
-- Nothing new: every entry up to the stream's last one has been handed out, so the
-- caller waits for entries after it.
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last == 0 then return {0, {}, '0-0', clock} end
return {0, {}, last[1][1], clock}
"""

_CLAIM = """
local pending = redis.call('XPENDING', KEYS[2], ARGV[2], '-', '+', ARGV[4])
if #pending == 0 then return {0, {}, {}, 0} end
-- One XCLAIM per entry: an entry that is already ours (we are replaying it after a
-- failed commit) keeps its delivery count; another consumer's counts one more.
local entries, counts, gone = {}, {}, {}
for _, p in ipairs(pending) do
  local count = p[4]
  if p[2] ~= ARGV[3] then count = count + 1 end
  local claimed = redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, p[1], 'RETRYCOUNT', count)
  if claimed[1] then
    entries[#entries + 1] = claimed[1]
    counts[#counts + 1] = count
  else
    gone[#gone + 1] = p[1]
  end
end
-- An entry deleted from the stream while pending can never be processed; Redis 7
-- drops it from the pending list on XCLAIM, Redis 6.2 keeps it: ack it on both.
if #gone > 0 then redis.call('XACK', KEYS[2], ARGV[2], unpack(gone)) end
return {0, entries, counts, #pending}
"""

# KEYS: lease, attempts hash. ARGV: lease token, then the claimed entries' ids, oldest
# first. Returns each one's attempts so far and last error; counts one more attempt for
# all of them, or only for the first if any has an unfinished attempt already.
_MARK = """
local counts, errors, suspect = {}, {}, false
for i = 2, #ARGV do
  local count = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  counts[i - 1] = count
  errors[i - 1] = redis.call('HGET', KEYS[2], ARGV[i] .. ':error') or ''
  if count > 0 then suspect = true end
end
local n = #counts
if suspect then n = 1 end
for i = 1, n do redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1) end
return {0, counts, errors}
"""

# KEYS: lease, ingest stream, dead-letter stream, window checkpoint hash, attempts hash,
#   then the partition's three topic directory keys (realtime/core/directory.py).
# ARGV: lease token, group, history maxlen, dead-letter maxlen, then the batch as one
#   JSON document {"h": [[key, id, [field, value, ...], maxlen (0: ARGV[3]), minid ('':
#   none), topic ('': not recorded in the directory), "ts"], ...], "t": [[topic, id,
#   "ts", events], ...] (for the directory, written before or elsewhere: held back by
#   the worker, or a cluster's other slots), "i": directory idle ms, "p": [channel, ...],
#   "c": "PUBLISH" or "SPUBLISH", "r": [[ingest stream, [field, value, ...]], ...],
#   "s": [field, value, ...], "d": [field, ...], "a": [entry id, ...], "x": [entry id
#   whose attempt count to clear, ...]}, then the count of channels n and n payloads (one
#   per channel of "p"), then per dead letter: field-arg count f, f field/value args
#   (binary-safe: the entry's raw fields).
# Returns {0, refused} or, for a history write that failed, {its index, error, refused}:
#   refused lists the history writes (1-based) skipped as written before.
# One JSON argument rather than one argument per value: redis-py packs each argument in
# Python, cjson decodes the one document in C (`python -m bench.worker` measures it). The
# payloads are arguments of their own: JSON inside a JSON string would be escaped by the
# worker and unescaped again by cjson, byte by byte (callgrind: bench/README.md); the
# worker packs them in C (`_pack`). (As one argument, cut by lengths listed in the
# document, they cost Redis 5% more instructions per event: `bench.commit_cost`.)
_COMMIT = (
    LUA_RECORD
    + """
local batch = cjson.decode(ARGV[5])
local written = {}  -- topic -> {last id, last ts, events}: for the directory
local function wrote(topic, id, ts, n)
  local w = written[topic]
  if w then
    w[1], w[2], w[3] = id, ts, w[3] + n
  else
    written[topic] = {id, ts, n}
  end
end
-- Written before (counts the worker held back: `Unrecorded`) or elsewhere (a cluster).
for _, t in ipairs(batch.t) do wrote(t[1], t[2], t[3], t[4]) end
local trims, trimmed, refused = {}, {}, {}
for e, write in ipairs(batch.h) do
  local cap = write[4]
  if cap == 0 then cap = ARGV[3] end
  local r = redis.pcall('XADD', write[1], 'MAXLEN', '~', cap, write[2], unpack(write[3]))
  if type(r) == 'table' and r.err then
    -- An id at or below the stream's last: written by an earlier delivery. Skip it.
    if not string.find(r.err, 'equal or smaller', 1, true) then
      -- A key of the wrong type fails this entry every time: report which one.
      if string.sub(r.err, 1, 9) == 'WRONGTYPE' then return {e, r.err, refused} end
      return redis.error_reply(r.err)
    end
    refused[#refused + 1] = e
  elseif write[6] ~= '' then
    wrote(write[6], write[2], write[7], 1)
  end
  if write[5] ~= '' then  -- retention by time: one trim per key, after its last write
    if trims[write[1]] == nil then trimmed[#trimmed + 1] = write[1] end
    trims[write[1]] = write[5]
  end
end
if next(written) then
  record_directory(KEYS[6], KEYS[7], KEYS[8], written, batch.i, RATE_WINDOW_MS)
end
for _, key in ipairs(trimmed) do redis.call('XTRIM', key, 'MINID', '~', trims[key]) end
local channels, publish = batch.p, batch.c  -- PUBLISH, or SPUBLISH on a cluster
for j = 1, #channels do redis.call(publish, channels[j], ARGV[6 + j]) end
for _, routed in ipairs(batch.r) do
  redis.call('XADD', routed[1], '*', unpack(routed[2]))
end
local s, d = batch.s, batch.d
for first = 1, #s, 1000 do  -- field/value pairs: first is odd, the chunk is even
  redis.call('HSET', KEYS[4], unpack(s, first, math.min(first + 999, #s)))
end
for first = 1, #d, 1000 do
  redis.call('HDEL', KEYS[4], unpack(d, first, math.min(first + 999, #d)))
end
local i = 7 + #channels
while i <= #ARGV do
  local f = tonumber(ARGV[i])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, i + 1, i + f))
  i = i + 1 + f
end
local x = batch.x
for first = 1, #x, 500 do
  local names = {}
  for j = first, math.min(first + 499, #x) do
    names[#names + 1] = x[j]
    names[#names + 1] = x[j] .. ':error'
  end
  redis.call('HDEL', KEYS[5], unpack(names))
end
local acks = batch.a
for first = 1, #acks, 1000 do  -- unpack has a stack limit
  redis.call('XACK', KEYS[2], ARGV[2], unpack(acks, first, math.min(first + 999, #acks)))
end
return {0, refused}
""".replace("RATE_WINDOW_MS", str(RATE_WINDOW_MS))
)

LEASE_LOST = -1
DEAD_LETTER_MAXLEN = 100_000


def fenced_script(body: str) -> str:
    """A script body behind the lease check."""
    return _FENCE + body


class LeaseLost(Exception):
    """The partition's lease is no longer ours: stop reading and writing it."""


@dataclass(slots=True)  # not frozen, as IngestEvent (pipelines/transform.py)
class Entry:
    id: str
    fields: Fields
    deliveries: int = 1  # how many times the group has handed this entry out
    # Recovery only (`mark`): attempts begun before this one that never finished, and
    # the last one's error; `marked`: this attempt is counted, the commit clears it.
    attempts: int = 0
    last_error: str = ""
    marked: bool = False


@dataclass
class ReadResult:
    entries: list[Entry]
    last_id: str = "0-0"  # with no entries: wait for entries after this one
    clock_ms: int = 0  # Redis time before the read: every entry below it is handed out


@dataclass
class ClaimResult:
    entries: list[Entry]
    done: bool  # nothing was pending: the partition has been recovered


@dataclass(slots=True)  # one per event: slots make it cheaper to create
class HistoryWrite:
    key: str
    id: str
    fields: list[str]  # field, value, ...: text (the commit sends them as JSON)
    maxlen: int = 0  # the topic's count cap; 0: the worker's REALTIME_HISTORY_MAXLEN
    minid: str = ""  # trim the topic to entries from this time on (retention); '': don't
    topic: str = ""  # for the topic directory: the event's topic and ts
    ts: int = 0
    ts_text: str = ""  # str(ts), when the caller has it already

    def document(self) -> list[Any]:
        # ts as text: cjson would write a number back with 14 digits only
        ts = self.ts_text or str(self.ts)
        return [self.key, self.id, self.fields, self.maxlen, self.minid, self.topic, ts]


@dataclass
class CommitPlan:
    """What one commit writes, in order; built by the partition runner."""

    history: list[HistoryWrite] = field(default_factory=list)
    publishes: list[tuple[str, bytes]] = field(default_factory=list)
    dead_letters: list[list[Value]] = field(default_factory=list)
    routed: list[tuple[str, list[str]]] = field(default_factory=list)  # (stream, fields)
    checkpoint: list[str] = field(default_factory=list)  # HSET field, value, ...
    removed: list[str] = field(default_factory=list)  # HDEL fields
    acks: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)  # entries whose attempt count to clear

    def __bool__(self) -> bool:
        return bool(
            self.acks
            or self.cleared
            or self.history
            or self.publishes
            or self.dead_letters
            or self.routed
            or self.checkpoint
            or self.removed
        )


@dataclass(frozen=True)
class CommitFailure:
    """History event `event_index` (0-based, in plan order) failed with `error`;
    the events before it are written, nothing was published or acknowledged."""

    event_index: int
    error: str


def _entry(raw: Sequence[Any], deliveries: int = 1) -> Entry:
    entry_id, flat = raw
    if len(flat) == 6:  # topic, ts, data: an ingest API entry (per event: spelled out)
        fields = {flat[0]: flat[1], flat[2]: flat[3], flat[4]: flat[5]}
    elif len(flat) % 2:
        raise ValueError(f"an entry's fields come in pairs: {flat!r}")
    else:
        pairs = iter(flat)  # one iterator zipped with itself: name, value, name, value...
        fields = dict(zip(pairs, pairs, strict=True))
    entry_text = entry_id.decode() if type(entry_id) is bytes else text(entry_id)
    return Entry(entry_text, fields, deliveries)


class FencedPartition:
    """One partition's stream, used under the lease whose token is `token`."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        partition: int,
        *,
        token: str,
        group: str,
        consumer: str,
        history_maxlen: int,
        directory_idle_ms: int = 86_400_000,
    ) -> None:
        self.redis = redis
        self.directory_keys = keys.directory(partition)
        self.directory_idle_ms = directory_idle_ms
        self.partition = partition
        self.stream = keys.ingest(partition)
        self.lease_key = keys.lease(partition)
        self.dead_key = keys.dead_letters(partition)
        self.windows_key = keys.windows(partition)
        self.attempts_key = keys.attempts(partition)
        # Cluster mode: writes outside the partition's hash slot go first, on their own.
        self.slot = slot_of(self.stream)
        self.other_slots = OtherSlots(redis, history_maxlen) if keys.cluster else None
        # Directory counts held back (`Unrecorded`); not on a cluster, whose commit
        # records the writes of other slots on its own.
        self.unrecorded = Unrecorded() if self.other_slots is None else None
        self.token = token
        self.group = group
        self.consumer = consumer
        self.history_maxlen = history_maxlen
        # The read after a commit goes without Lua (`read`): on a connection of our own,
        # opened on first use. Not on a cluster (its writes span slots), nor behind
        # Sentinel (its pool finds the primary): there every read is a script.
        pool = getattr(redis, "connection_pool", None)
        self._own: AbstractConnection | None = None
        if self.other_slots is None and type(pool) in (ConnectionPool, BlockingConnectionPool):
            assert pool is not None
            self._own = pool.connection_class(**pool.connection_kwargs)
        # The commit on `_own` found the lease ours after a WATCH of it, and nothing
        # has been sent on `_own` since.
        self._watching = False
        self._token = token.encode()
        self._read = redis.register_script(fenced_script(_READ))
        self._claim = redis.register_script(fenced_script(_CLAIM))
        self._commit = redis.register_script(fenced_script(_COMMIT))
        self._mark = redis.register_script(fenced_script(_MARK))

    def _args(self, count: int) -> list[Value]:
        return [self.token, self.group, self.consumer, count]

    async def read(self, count: int) -> ReadResult:
        """Up to `count` entries nobody has been given yet."""
        if self._watching:
            read = await self._read_watched(count)
            if read is not None:
                return read
        reply = await self._read(keys=[self.lease_key, self.stream], args=self._args(count))
        return self._read_result(reply)

    async def _read_watched(self, count: int) -> ReadResult | None:
        """The read as MULTI/EXEC, right after a commit: Redis hands XREADGROUP's reply
        back as it is. Fenced as the script is: the commit found the lease ours after
        the WATCH, so EXEC runs only if nobody has written the lease since (a takeover
        writes it; so does our own renewal, and then the script reads). None: read
        with the script (the lease was written)."""
        own, self._watching = self._own, False
        assert own is not None
        command = (
            _MULTI
            + _pack("GET", self.lease_key)
            + _TIME
            + _pack(
                "XREADGROUP",
                "GROUP",
                self.group,
                self.consumer,
                "COUNT",
                count,
                "STREAMS",
                self.stream,
                ">",
            )
            # With nothing new, the caller waits for entries after the stream's last.
            + _pack("XREVRANGE", self.stream, "+", "-", "COUNT", 1)
            + _EXEC
        )
        try:
            await own.send_packed_command(command, check_health=False)
            for _ in range(5):  # OK, QUEUED x 4
                await own.read_response()
            reply = await own.read_response()
        except BaseException:
            await own.disconnect(nowait=True)
            raise
        if reply is None:
            return None
        lease, now, streams, last = reply
        for part in reply:
            if isinstance(part, ResponseError):
                raise part  # NOGROUP: the runner recreates the group
        if lease not in (self._token, self.token):  # the WATCH promised it: cannot fail
            raise LeaseLost(self.stream)
        clock = int(now[0]) * 1000 + int(now[1]) // 1000
        if not streams:
            return ReadResult([], text(last[0][0]) if last else "0-0", clock)
        # RESP3 (a client other than the worker's): a map of stream -> entries
        found = next(iter(streams.values())) if isinstance(streams, dict) else streams[0][1]
        return ReadResult([_entry(raw) for raw in found], clock_ms=clock)

    async def close(self) -> None:
        """Close the connection of our own, if open."""
        self._watching = False
        if self._own is not None:
            await self._own.disconnect()

    def _read_result(self, reply: Any) -> ReadResult:
        if reply[0] == LEASE_LOST:
            raise LeaseLost(self.stream)
        clock = int(reply[3])
        if reply[1]:
            return ReadResult([_entry(raw) for raw in reply[1]], clock_ms=clock)
        return ReadResult([], text(reply[2]), clock)

    async def claim(self, count: int) -> ClaimResult:
        """Up to `count` pending entries (anyone's), oldest first, now ours."""
        reply = await self._claim(keys=[self.lease_key, self.stream], args=self._args(count))
        if reply[0] == LEASE_LOST:
            raise LeaseLost(self.stream)
        entries = [_entry(raw, int(n)) for raw, n in zip(reply[1], reply[2], strict=True)]
        return ClaimResult(entries, done=int(reply[3]) == 0)

    async def mark(self, entries: Sequence[Entry]) -> list[Entry]:
        """Count an attempt of claimed `entries` before retrying them: all of them, with
        their earlier attempts and last error, or only the first (one at a time, while
        any has an unfinished attempt: that finds the entry that keeps failing)."""
        reply = await self._mark(
            keys=[self.lease_key, self.attempts_key], args=[self.token, *[e.id for e in entries]]
        )
        if reply[0] == LEASE_LOST:
            raise LeaseLost(self.stream)
        counts = [int(n) for n in reply[1]]
        marked = [
            replace(entry, attempts=count, last_error=text(error), marked=True)
            for entry, count, error in zip(entries, counts, reply[2], strict=True)
        ]
        return marked[:1] if any(counts) else marked

    async def note(self, entry_ids: Sequence[str], error: str) -> None:
        """Remember `error` as the last of these entries' attempts (the dead letter
        quotes it if they never finish; their commit clears it)."""
        if entry_ids:
            mapping = {f"{entry_id}:error": error[:2000] for entry_id in entry_ids}
            await self.redis.hset(self.attempts_key, mapping=mapping)  # type: ignore[arg-type]

    async def wait(self, after_id: str, block_ms: int) -> None:
        """Block until the stream has an entry after `after_id` or `block_ms` passed."""
        await self.redis.xread({self.stream: after_id}, count=1, block=block_ms)

    async def wait_and_read(self, after_id: str, block_ms: int, count: int) -> ReadResult:
        """`wait`, then `read`, in one round trip: Redis runs the read as soon as the
        blocking XREAD returns, so a new entry reaches the worker one round trip (and
        one wake-up of the worker) sooner (`python -m bench.latency`). On a cluster,
        or if Redis lost the read script, the two go one after the other."""
        if self.other_slots is not None:
            await self.wait(after_id, block_ms)
            return await self.read(count)
        keys: list[Value] = [self.lease_key, self.stream]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xread({self.stream: after_id}, count=1, block=block_ms)
            pipe.evalsha(self._read.sha, 2, *keys, *self._args(count))
            _, reply = await pipe.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError):
            return await self.read(count)  # loads the script
        if isinstance(reply, Exception):
            raise reply
        return self._read_result(reply)

    async def record_due(self) -> None:
        """Commit the directory counts held back, if the oldest is due (an idle turn)."""
        if self.unrecorded is not None and self.unrecorded.due(time.monotonic()):
            await self.commit(CommitPlan())

    async def record_held(self) -> None:
        """Commit every directory count held back (the partition's last commit)."""
        if self.unrecorded:
            await self.commit(CommitPlan(), everything=True)

    async def commit(self, plan: CommitPlan, *, everything: bool = False) -> CommitFailure | None:
        """Write the plan atomically; a CommitFailure names a history write that failed
        (a key of the wrong type); raises LeaseLost, or ResponseError for anything else.
        `everything`: with all the directory counts held back."""
        history_index = list(range(len(plan.history)))
        elsewhere: list[list[str | int]] = []
        if self.other_slots is not None:
            parts = split(plan, self.slot)
            if parts.elsewhere:
                failed = await self.other_slots.write(parts.elsewhere)
                if failed is not None:
                    return CommitFailure(*failed)
                elsewhere = [
                    [w.topic, w.id, str(w.ts), 1]
                    for writes in parts.elsewhere.values()
                    for w in writes.history
                    if w.topic
                ]
            plan, history_index = parts.own, parts.history_index
        documents = [w.document() for w in plan.history]
        unrecorded, now, held = self.unrecorded, time.monotonic(), None
        if unrecorded is not None:
            held = (
                unrecorded.hold_all()
                if everything
                else unrecorded.hold(plan.history, documents, now)
            )
            elsewhere = held.entries
        batch = {
            "h": documents,
            "t": elsewhere,
            "i": self.directory_idle_ms,
            "p": [channel for channel, _ in plan.publishes],
            "c": "PUBLISH" if self.other_slots is None else "SPUBLISH",
            "r": [[stream, fields] for stream, fields in plan.routed],
            "s": plan.checkpoint,
            "d": plan.removed,
            "a": plan.acks,
            "x": plan.cleared,
        }
        args: list[Value] = [self.token, self.group, self.history_maxlen, DEAD_LETTER_MAXLEN]
        args.append(jsoncodec.dumpb(batch))
        args.append(len(plan.publishes))
        args += [payload for _, payload in plan.publishes]
        for record in plan.dead_letters:
            args += [len(record), *record]
        keys = [
            self.lease_key,
            self.stream,
            self.dead_key,
            self.windows_key,
            self.attempts_key,
            *self.directory_keys,
        ]
        if self._own is not None:
            reply = await self._commit_watching(keys, args)
        else:
            reply = await self._commit(keys=keys, args=args)
        status = int(reply[0])
        if status == LEASE_LOST:
            raise LeaseLost(self.stream)
        if held is not None:
            self._count(held, plan.history, reply, now, status)
        if status == 0:
            return None
        return CommitFailure(history_index[status - 1], text(reply[1]))

    def _count(
        self, held: Held, writes: list[HistoryWrite], reply: Any, now: float, status: int
    ) -> None:
        """The held-back writes the commit made, into `unrecorded`."""
        assert self.unrecorded is not None
        at = 1 if status == 0 else 2  # {0, refused} or {index, error, refused}
        refused = reply[at] if len(reply) > at else []
        self.unrecorded.committed(
            held, writes, {int(i) for i in refused}, now, written=status - 1 if status else None
        )

    async def _commit_watching(self, keys: list[str], args: list[Value]) -> Any:
        """The commit's script after a WATCH of the lease, on our own connection: if the
        script finds the lease ours, the next `read` may go without Lua."""
        own, self._watching = self._own, False
        assert own is not None
        command = _pack("WATCH", self.lease_key) + _pack(
            "EVALSHA", self._commit.sha, len(keys), *keys, *args
        )
        try:
            await own.send_packed_command(command, check_health=False)
            await own.read_response()
            reply = await own.read_response()
        except NoScriptError:  # not run: Redis lost the script (restarted, flushed)
            return await self._commit(keys=keys, args=args)  # loads it
        except ResponseError:
            raise  # the script's error: the connection is fine
        except BaseException:
            await own.disconnect(nowait=True)
            raise
        self._watching = reply[0] == 0
        return reply


def _pack(*args: Value) -> bytes:
    """One command as Redis reads it, packed in C (redis-py packs each argument in
    Python)."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub: 1-tuples
    return packed


_MULTI = _pack("MULTI")
_TIME = _pack("TIME")
_EXEC = _pack("EXEC")


def is_missing_group(exc: ResponseError) -> bool:
    return "NOGROUP" in str(exc)
