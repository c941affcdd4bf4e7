"""Connection-state recovery, the Redis part: the instance's recovery log and the
session records, written as they are made, and read back when a client comes back
(to this instance or another, after a restart or a kill).

- `rt:rlog:<epoch>`: a stream, one entry per write of the recorder's pending log
  entries (`a`: the number of the first, `e`: the entries, one a line), trimmed to the
  recovery window and expiring with it.
- `rt:session:<pid>`: a hash, `o` the connection that owns the session now and `s` its
  record (checkpoints, `realtime.delivery.recovery`), expiring a window after the last
  write. A write by a connection that no longer owns the session (the client came back
  elsewhere) changes nothing.

A fan-out frame's entry is written before the frame is handed out (the hub awaits
`flush`); the other entries right after their frames (the next event-loop turn): a
SIGKILL in between loses that tail, which `replay` detects (a fresh session, never a
wrong one). A recovery on the instance that wrote the log writes what is pending first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.exceptions import NoScriptError, RedisError

from realtime.core import jsoncodec
from realtime.core.backoff import Backoff
from realtime.core.keys import Keys
from realtime.delivery.recovery import Checkpoint, Offset, Recorder

logger = logging.getLogger(__name__)

MIN_REFRESH_S = 2.0  # the shortest interval between two rounds of every record
# A round of the changed records is also due once the log has grown this much since the
# last one: a recovery replays the log from its record's checkpoint (or the one before,
# for a client that got less than was sent), so this bounds what it reads (two rounds'
# worth) well under MAX_READ, and its CPU (`replay` skips other topics' frames unparsed).
LINES_PER_ROUND = 100_000
MAX_PENDING = 200_000  # entries held while Redis is away; past it they are dropped
LOG_PAGE = 500
RECORDS_PER_WRITE = 1000  # session records per script call
# Connections a write looks at in a round of checkpoints (`Recorder.checkpoints`): at
# about 20 us each (make, encode, queue), a round of 1,000 at once held the event loop
# for 20-30 ms every round (then every 2 s), the p99 of `python -m bench.latency` (50: ~1 ms each).
ROUND_SLICE = 50
MAX_READ = 500_000  # log entries one recovery may read (a busy instance, a long window)

# Write session records, each unless another connection owns it now: KEYS[i] a session,
# ARGV[4i-3 .. 4i] its owner, record, claim ("1": whoever owns it now) and TTL (ms).
_WRITE = """
for i = 1, #KEYS do
  local o = ARGV[4 * i - 3]
  local owner = redis.call('HGET', KEYS[i], 'o')
  if not owner or owner == o or ARGV[4 * i - 1] == '1' then
    redis.call('HSET', KEYS[i], 'o', o, 's', ARGV[4 * i - 2])
    redis.call('PEXPIRE', KEYS[i], ARGV[4 * i])
  end
end
return 1
"""


class SessionStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        recorder: Recorder,
        window_s: float,
        *,
        lines_per_round: int = LINES_PER_ROUND,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.recorder = recorder
        self.window_ms = int(window_s * 1000)
        # Every session is written this often (changed or not, so its record outlives
        # it by at least a window), and a changed one no more often unless the log grew
        # `lines_per_round` since: a record is a checkpoint to replay the log from, and
        # the log holds every change after it, so it need not be current, only within
        # the log's reach. Rewriting every changed record every 2 s was a fifth of the
        # web's CPU at 1,000 topics x 1 subscriber (py-spy, bench small-topics).
        self.refresh_s = min(30.0, max(window_s / 3, MIN_REFRESH_S))
        self.lines_per_round = lines_per_round
        self.record_ttl_ms = self.window_ms + int(self.refresh_s * 1000)
        # The log is kept as long as any record may point into it: a record's oldest
        # checkpoint read (`prev`) is up to two rounds old when written, and is read up
        # to record_ttl later (window + 2 x MIN_REFRESH_S >= 2 x refresh_s).
        self.log_ttl_ms = self.record_ttl_ms + self.window_ms + int(MIN_REFRESH_S * 2000)
        self._write = redis.register_script(_WRITE)
        self._loaded = False  # _WRITE is known to Redis (every primary of a cluster)
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()  # log writes, one at a time
        self._records_lock = asyncio.Lock()  # record writes, one batch at a time
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._last_ms = 0
        self._expire_set_ms = 0
        self._checkpointed_n = 0  # the recorder's entry count at the last round
        self._refreshed = 0.0  # the last round of every record
        self.writes = 0  # log writes so far (each one XADD), for the cost figures
        self._log_conn: Any = None  # the log writes' own connection (`_xadd`)

    # -- writing -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def kick(self) -> None:
        """Entries are pending: write them within this turn of the event loop."""
        self._kick.set()

    async def _run(self) -> None:
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        while True:
            # At once: the less log a SIGKILL can lose, the fewer clients it costs their
            # session. Under load, entries made while a write is out go in the next one.
            # Idle, nothing is due before the next refresh: no timer every 2 s.
            if self.recorder.rounding:  # the round's next slice, after what is ready
                await asyncio.sleep(0)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._until_due()):
                        await self._kick.wait()
            self._kick.clear()
            if self._closing:
                return
            try:
                await self.flush()
                backoff.reset()
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                logger.warning("recovery log not written (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    def _until_due(self) -> float:
        return max(0.0, self._refreshed + self.refresh_s - time.monotonic())

    async def flush(self, *, final: bool = False) -> None:
        """Write the pending entries, then the checkpoints that are due. Entries go one
        write at a time (the log's stream ids must arrive in order); records after the
        entries they count on, one batch at a time, without holding up the entries that
        follow (a batch of records can be a script call per connection)."""
        async with self._lock:
            checkpoints = await self._flush(final=final, records=True)
        if checkpoints:
            async with self._records_lock:
                await self._write_records(checkpoints)

    async def write_log(self) -> None:
        """Write the pending entries only: what a fan-out hand-out waits for. The
        records stay with the writer task (`flush`)."""
        async with self._lock:
            await self._flush(final=False, records=False)

    async def _flush(self, *, final: bool, records: bool) -> list[Checkpoint]:
        """Write the pending entries; returns the checkpoints due now (`records`)."""
        recorder = self.recorder
        first, lines = recorder.take_pending()
        now = time.monotonic()
        refresh = now - self._refreshed >= self.refresh_s
        grown = recorder.n - self._checkpointed_n >= self.lines_per_round
        due = final or refresh or grown
        checkpoints: list[Checkpoint] = []
        try:
            entry = self._log_entry(first, lines) if lines else None
            if records:
                checkpoints = recorder.checkpoints(
                    changed=due, all_due=refresh, limit=None if final else ROUND_SLICE
                )
            if entry is not None and self._expire_due():
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(*entry[:2], **entry[2])
                    pipe.pexpire(entry[0], self.log_ttl_ms)
                    await pipe.execute()
            elif entry is not None:
                # Most writes (one per fan-out hand-out): one command, since a
                # pipeline's machinery costs as much again in the web's CPU.
                await self._xadd(*entry)
        except BaseException:
            if lines:  # written again next time, in order (or dropped past the bound)
                recorder.pending[:0] = lines
                recorder.pending_from = first
                if len(recorder.pending) > MAX_PENDING:
                    logger.warning("recovery log: Redis away, %d entries dropped", len(lines))
                    recorder.pending_from += len(recorder.pending)
                    recorder.pending = []
            raise
        if records and due:
            self._checkpointed_n = recorder.n
            if refresh:
                self._refreshed = now
        return checkpoints

    async def _write_records(self, checkpoints: list[Checkpoint]) -> None:
        """In batches of RECORDS_PER_WRITE (a refresh of every session at once would
        hold all their JSON and replies in memory together), each one script call: a
        call per record was ~37 us of the web's CPU per record, 2-3 records per connect
        (`python -m bench.storm`); one per batch, ~7. In a cluster, where a script's keys
        share a slot, a call per record, pipelined."""
        await self._load_script()
        for start in range(0, len(checkpoints), RECORDS_PER_WRITE):
            batch = checkpoints[start : start + RECORDS_PER_WRITE]
            try:
                if self.keys.cluster:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for checkpoint in batch:
                            await self._call(pipe, [checkpoint], claim=False)
                        await pipe.execute()
                else:
                    await self._call(self.redis, batch, claim=False)
            except NoScriptError:
                self._loaded = False
                raise

    def _log_entry(
        self, first: int, lines: list[str]
    ) -> tuple[str, dict[Any, Any], dict[str, Any]]:
        """The XADD of the pending entries: key, fields, options."""
        # A stream id that grows with the entries: <ms>-<number of the last entry>.
        self._last_ms = max(self._last_ms, int(time.time() * 1000))
        last = first + len(lines) - 1
        entry_id = f"{self._last_ms}-{last}"
        key = self.keys.recovery_log(self.recorder.epoch)
        fields: dict[Any, Any] = {"a": str(first), "e": "\n".join(lines)}
        minid = max(0, self._last_ms - self.log_ttl_ms)
        self.recorder.flushed_id = entry_id
        self.writes += 1
        return key, fields, {"id": entry_id, "minid": minid, "approximate": True}

    async def _xadd(self, key: str, fields: dict[str, str], options: dict[str, Any]) -> None:
        """One log write's XADD. On one Redis server, straight on a connection of the
        log's own: the client's command path (pool, retry, metrics, the reply's
        callbacks) was half of a log write's CPU, and a hand-out waits for one each
        (py-spy --native, 100 topics x 10). Writes are one at a time (`_lock`), so the
        connection has one command out at most; after any error it is closed, and the
        next write opens another. A cluster, or Sentinel (failover finds the primary
        per command), goes through the client."""
        pool = getattr(self.redis, "connection_pool", None)
        if type(pool) not in (ConnectionPool, BlockingConnectionPool):
            await self.redis.xadd(key, fields, **options)  # type: ignore[arg-type]
            return
        assert pool is not None
        conn = self._log_conn
        if conn is None:
            conn = self._log_conn = pool.make_connection()
        try:
            await conn.send_command(
                *("XADD", key, "MINID", "~", options["minid"], options["id"]),
                *("a", fields["a"], "e", fields["e"]),
                check_health=False,
            )
            await conn.read_response()
        except BaseException:
            self._log_conn = None
            await conn.disconnect(nowait=True)
            raise

    def _expire_due(self) -> bool:
        """Whether the log's TTL is to be set again (it is minutes: once a second)."""
        if self._last_ms - self._expire_set_ms >= 1000:
            self._expire_set_ms = self._last_ms
            return True
        return False

    async def _call(self, client: Any, checkpoints: list[Checkpoint], *, claim: bool) -> None:
        """`_WRITE` of these records (queued, when `client` is a pipeline)."""
        keys: list[str] = []
        args: list[str | int] = []
        for checkpoint in checkpoints:
            keys.append(self.keys.session(checkpoint.pid))
            ttl = self.window_ms if checkpoint.final else self.record_ttl_ms
            record = jsoncodec.dumps(checkpoint.record)
            args += (checkpoint.owner, record, "1" if claim else "0", ttl)
        await self._write(keys=keys, args=args, client=client)

    async def claim(self, checkpoint: Checkpoint) -> None:
        """Make a recovering connection the session's owner, before it is answered."""
        await self._load_script()
        try:
            await self._call(self.redis, [checkpoint], claim=True)
        except NoScriptError:
            self._loaded = False
            raise

    async def _load_script(self) -> None:
        """redis-py loads a script before a plain pipeline runs it, not before a
        cluster's (which only sends EVALSHA): load it first, on every primary, and
        again after a NOSCRIPT (a restarted or failed-over Redis)."""
        if not self._loaded:
            await self.redis.script_load(_WRITE)
            self._loaded = True

    async def aclose(self) -> None:
        """Write what is left (the final checkpoints of the connections just closed)."""
        self._closing = True
        self._kick.set()
        if self._task is not None:
            # Ends after the write it may be doing (cancelling it mid-write could leave
            # the log with a hole); a write that hangs is given up.
            _done, pending = await asyncio.wait({self._task}, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.flush(final=True)
        except (RedisError, OSError) as exc:
            logger.warning("recovery log: last write failed (%s)", exc)
        if self._log_conn is not None:
            await self._log_conn.disconnect()
            self._log_conn = None

    # -- reading -------------------------------------------------------------------------

    async def load(self, pid: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.session(pid), "s")
        if raw is None:
            return None
        record = jsoncodec.loads(raw)
        return record if isinstance(record, dict) else None

    async def log(
        self, epoch: str, after: str, end: int | None
    ) -> list[tuple[int, list[str]]] | None:
        """The log's entries after stream id `after`, up to entry `end` or the log's
        end (None); None if that is more than a recovery should read."""
        key = self.keys.recovery_log(epoch)
        out: list[tuple[int, list[str]]] = []
        start, lines = f"({after}", 0
        while True:
            page: Any = await self.redis.xrange(key, min=start, count=LOG_PAGE)
            for entry_id, fields in page:
                first = int(fields[b"a"])
                if end is not None and first > end:
                    return out
                chunk = fields[b"e"].decode().split("\n")
                out.append((first, chunk))
                lines += len(chunk)
                start = f"({entry_id.decode() if isinstance(entry_id, bytes) else entry_id}"
            if len(page) < LOG_PAGE:
                return out
            if lines > MAX_READ:
                return None


__all__ = ["Offset", "SessionStore"]
