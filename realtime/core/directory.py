"""The topic directory's shared rules (pure): what the worker's commit records per topic,
how a reader turns it into a topic's last event, recent rate and idleness, and the
paging of `GET /api/v1/topics` across partitions.

Per partition (`Keys.directory`), written by the partition's owner in its commit, one
update per topic per batch, O(1) in the number of events (a topic recorded less than a
second ago is held back by the worker: `processors/worker/unrecorded.py`):

- `names`: a sorted set of topic names, every score 0, so ZRANGEBYLEX pages by prefix;
- `seen`: a sorted set of topic -> when the last batch wrote it (Redis time, ms), so the
  idle are found with one ZRANGEBYSCORE and pruned a bounded number at a time;
- `info`: a hash of topic -> JSON `[last id, "last ts", bucket, count, previous count,
  seen ms]` (the ts as text: Lua's cjson writes numbers with 14 digits, and a ts may
  have 16): the event counts of the current and the previous RATE_WINDOW_MS bucket,
  from which a reader estimates the recent rate (a sliding window over two buckets).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass

from realtime.core import b64url
from realtime.core.topics import is_valid_topic

RATE_WINDOW_MS = 10_000  # "recent": the rate is over about the last 10 s
PRUNE_PER_COMMIT = 16  # idle topics a worker's commit removes, at most
PRUNE_PER_READ = 100  # idle topics a reader removes from one partition, at most
# A commit moves a topic's `seen` score only once it is this old (or a hundredth of the
# idle time, if less): a topic may be pruned that much before it is fully idle.
SEEN_STEP_MS = 1000

# A Lua function both sides use: remove up to `count` topics last written before
# `cutoff` from the three keys. Atomic inside its script: a topic written since is kept.
LUA_PRUNE = """
local function prune_directory(names, seen, info, cutoff, count)
  local idle = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. cutoff, 'LIMIT', 0, count)
  for _, topic in ipairs(idle) do
    redis.call('ZREM', names, topic)
    redis.call('ZREM', seen, topic)
    redis.call('HDEL', info, topic)
  end
  return #idle
end
"""

# A Lua function for the commit: `written` maps topic -> {last id, last ts, events}.
# One HMGET, ZADD and HSET for all the batch's topics (not three commands per topic), and
# the record built with integer formats: Lua's tostring and cjson write a number through
# the libc float formatter, which was a tenth of the commit's instructions (callgrind,
# bench/README.md). The bytes are cjson's: `[id,ts,bucket,count,previous,seen]` with the
# numbers as plain integers; a record in another form is read with cjson.
LUA_RECORD = (
    LUA_PRUNE
    + """
local function record_directory(names, seen, info, written, idle_ms, window_ms)
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local bucket = math.floor(now_ms / window_ms)
  local now_s, bucket_s = string.format('%d', now_ms), string.format('%d', bucket)
  local before_s = string.format('%d', bucket - 1)
  -- A topic seen this recently keeps its `seen` score, and its record the same time (so
  -- the two stay equal): the score only finds the idle, and a ZADD per topic was a
  -- tenth of the commit's instructions (`python -m bench.commit_cost`).
  local recent = now_ms - math.min(SEEN_STEP_MS, math.floor(idle_ms / 100))
  local digits = {}  -- a count -> its text, each formatted once per commit
  local function int(n)
    local text = digits[n]
    if not text then
      text = string.format('%d', n)
      digits[n] = text
    end
    return text
  end
  local topics = {}
  for topic in pairs(written) do topics[#topics + 1] = topic end
  for first = 1, #topics, 1000 do  -- unpack has a stack limit
    local last = math.min(first + 999, #topics)
    local olds = redis.call('HMGET', info, unpack(topics, first, last))
    local fresh, scores, records = {}, {}, {}
    for j = first, last do
      local topic = topics[j]
      local w = written[topic]
      local count, previous = w[3], 0
      local old = olds[j - first + 1]
      local seen_s = now_s  -- or the record's, if recent: then `seen` stays as it is
      if old then  -- listed already: names and info are added and removed together
        -- the numbers after `["id","ts",`, found by plain search (a pattern costs a
        -- recursive call per character)
        local b, c, p
        local q = string.find(old, '","', 1, true)
        local at = q and string.find(old, '",', q + 3, true)
        local c1 = at and string.find(old, ',', at + 2, true)
        local c2 = c1 and string.find(old, ',', c1 + 1, true)
        local c3 = c2 and string.find(old, ',', c2 + 1, true)
        if c3 then
          b = string.sub(old, at + 2, c1 - 1)
          c = tonumber(string.sub(old, c1 + 1, c2 - 1))
          p = tonumber(string.sub(old, c2 + 1, c3 - 1))
          if not (c and p and string.find(b, '^%d+$')) then b = nil end
          local was = string.sub(old, c3 + 1, -2)
          local s = tonumber(was)
          if b and s and s >= recent and s <= now_ms then seen_s = was end
        end
        if b == bucket_s then
          count, previous = c + count, p
        elseif b == before_s then
          previous = c
        elseif b == nil then
          old = cjson.decode(old)
          if old[3] == bucket then
            count, previous = old[4] + count, old[5]
          elseif old[3] == bucket - 1 then
            previous = old[4]
          end
        end
      else
        fresh[#fresh + 1] = '0'
        fresh[#fresh + 1] = topic
      end
      if seen_s == now_s then
        scores[#scores + 1] = now_s
        scores[#scores + 1] = topic
      end
      records[#records + 1] = topic
      records[#records + 1] = '["' .. w[1] .. '","' .. w[2] .. '",' .. bucket_s .. ','
        .. int(count) .. ',' .. int(previous) .. ',' .. seen_s .. ']'
    end
    if #fresh > 0 then redis.call('ZADD', names, unpack(fresh)) end
    if #scores > 0 then redis.call('ZADD', seen, unpack(scores)) end
    redis.call('HSET', info, unpack(records))
  end
  prune_directory(names, seen, info, now_ms - idle_ms, PRUNE_PER_COMMIT)
end
""".replace("PRUNE_PER_COMMIT", str(PRUNE_PER_COMMIT)).replace("SEEN_STEP_MS", str(SEEN_STEP_MS))
)


@dataclass(frozen=True)
class Info:
    """What a partition's directory holds about one topic."""

    last_id: str
    last_ts: int
    bucket: int  # RATE_WINDOW_MS bucket of `count`
    count: int
    previous: int  # events in the bucket before `bucket`
    seen_ms: int  # Redis time of the last write


def decode_info(raw: bytes | str | None) -> Info | None:
    """The hash value, or None for a missing or unreadable one (never trusted blindly)."""
    if raw is None:
        return None
    try:
        last_id, last_ts, bucket, count, previous, seen = json.loads(raw)
        return Info(str(last_id), int(last_ts), int(bucket), int(count), int(previous), int(seen))
    except (ValueError, TypeError):
        return None


def rate(info: Info, now_ms: int, window_ms: int = RATE_WINDOW_MS) -> float:
    """Events per second over about the last window: the current bucket's count plus
    the previous bucket's, weighted by how much of it the window still covers."""
    bucket = now_ms // window_ms
    if info.bucket == bucket:
        count, previous = info.count, info.previous
    elif info.bucket == bucket - 1:
        count, previous = 0, info.count
    else:
        return 0.0
    covered = 1 - (now_ms - bucket * window_ms) / window_ms
    return (count + previous * covered) / (window_ms / 1000)


def is_idle(info: Info, now_ms: int, idle_ms: int) -> bool:
    """No event for `idle_ms`: the topic has left the directory (pruned or not yet)."""
    return info.seen_ms < now_ms - idle_ms


def newest(infos: Sequence[Info]) -> Info:
    """Of one topic's records in several partitions (on a cluster, pipelines of two
    partitions may write the same output topic), the one with the latest event; its
    rate is the sum of theirs."""
    return max(infos, key=lambda i: (_id_key(i.last_id), i.seen_ms))


def _id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)


# -- paging -----------------------------------------------------------------------------


class CursorError(ValueError):
    """Not a cursor this server gave."""


def encode_cursor(after: str) -> str:
    """The opaque cursor of a page that goes on after topic `after`."""
    return b64url.encode(after.encode())


def decode_cursor(text: str) -> str:
    try:
        after = b64url.decode(text).decode("ascii")
    except ValueError:  # base64's and UTF-8 errors are ValueErrors
        raise CursorError(text) from None
    if not is_valid_topic(after):
        raise CursorError(text)
    return after


def lex_range(prefix: str, after: str | None) -> tuple[str, str]:
    """ZRANGEBYLEX bounds of the names that start with `prefix`, after `after`.
    Topic characters are all below '{', so prefix + '{' bounds the prefix from above."""
    high = f"({prefix}{{" if prefix else "+"
    if after is not None and after >= prefix:
        return f"({after}", high
    return (f"[{prefix}" if prefix else "-"), high


def merge_names(batches: Sequence[Sequence[str]], chunk: int) -> tuple[list[str], str | None]:
    """A round of ZRANGEBYLEX, one batch of up to `chunk` names per partition, merged:
    the distinct names in order that are certainly complete (up to the frontier), and
    the frontier: the smallest last name of a full batch, where the next round starts
    (None: every partition was read to its end)."""
    full = [batch[-1] for batch in batches if len(batch) >= chunk]
    frontier = min(full) if full else None
    names: list[str] = []
    for name in heapq.merge(*batches):
        if frontier is not None and name > frontier:
            break
        if not names or names[-1] != name:
            names.append(name)
    return names, frontier
