"""Presence, a step of delivery: how many viewers each topic has across all web instances,
and `presence` events `{"topic", "count", "at"}` to the connections that asked for them
(`subscribe {topic, presence: true}`), at most one per topic per second.

A viewer is a Socket.IO subscription or an SSE reader of the topic. Redis holds, per
topic, a hash of web instance id -> that instance's local count (`Keys.presence`), and
one sorted set of live instances scored by heartbeat expiry (`Keys.presence_instances`);
`viewers.py` reads a topic's count as the sum of the live instances' fields. Nothing is
written per viewer: an instance writes its changed topics at most once per flush
interval (REALTIME_PRESENCE_FLUSH_MS), one HSET or HDEL, one SADD or SREM and one note
per changed topic, and a heartbeat (one ZADD) every third of REALTIME_PRESENCE_TTL_S.

An instance that dies stops heartbeating: its fields stop counting once its expiry
passes (at most REALTIME_PRESENCE_TTL_S after its last heartbeat), and the first live
instance to see that (each looks once a second) removes its fields and notes the change
on each of its topics. The note of a change travels on the topic's fan-out channel
(`{"method": "presence", "topic", "host_id"}`), which exactly the instances with a local
viewer of the topic listen on; each re-reads the count of the topics it has watchers of,
at most once per second per topic, and emits when it changed.

Heartbeats are scored, and judged, by the Redis clock (as the workers' are), so the
instances' own clocks need not agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.core import jsoncodec
from realtime.core.keys import PRESENCE_EVENT, Keys
from realtime.core.metrics import WebMetrics
from realtime.core.tasks import cancel_and_wait
from realtime.delivery.presence_counts import LocalMembers, LocalViewers, Throttle
from realtime.delivery.viewers import viewer_counts, viewer_members
from realtime.transport.frames import Frame

logger = logging.getLogger(__name__)

REAP_EVERY_S = 1.0  # how often an instance looks for dead ones
REAP_BATCH = 100  # dead instances handled per look
EVENT_INTERVAL_S = 1.0  # at most one `presence` event per topic this often

# Heartbeat: score = the Redis clock + the TTL (ms); 1 if the instance was not in the set.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
"""
# The instances whose heartbeat expired by the Redis clock (at most ARGV[1] of them).
_EXPIRED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""


def note(topic: str, instance: str) -> bytes:
    """The fan-out message saying that `instance`'s count of `topic` changed."""
    return jsoncodec.dumpb({"method": PRESENCE_EVENT, "topic": topic, "host_id": instance})


class Presence:
    """One web instance's presence: writes its counts, reaps dead instances, emits events."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        instance: str,
        send: Callable[[str, Frame], None],
        metrics: WebMetrics,
        *,
        ttl_s: float = 15.0,
        flush_s: float = 0.25,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.instance = instance
        self.send = send  # hand one connection (by sid) a frame
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.flush_s = flush_s
        # monotonic seconds (the event loop's time); a benchmark simulates its own
        self.clock = clock if clock is not None else _loop_time
        self.local = LocalViewers()
        self.members = LocalMembers()  # viewers by their token's `sub`
        self._subs: dict[str, dict[str, str]] = {}  # sid -> topic -> its `sub`
        self.watchers: dict[str, set[str]] = {}  # topic -> sids that asked for events
        self._watching: dict[str, set[str]] = {}  # sid -> its watched topics
        self.member_watchers: dict[str, set[str]] = {}  # those that may see members
        self.throttle = Throttle(EVENT_INTERVAL_S)
        self._sent: dict[str, int] = {}  # topic -> the count last emitted here
        self._sent_members: dict[str, tuple[int, list[str], bool]] = {}
        self._next_heartbeat = 0.0
        self._next_reap = 0.0
        self._registered = False  # our heartbeat is in the set (as far as we know)
        self._rewrite_next = False  # write every count again with the next heartbeat
        self._task: asyncio.Task[None] | None = None

    # -- called by the hub -----------------------------------------------------------------

    def viewers(self, topic: str, count: int) -> None:
        """This instance has `count` local viewers of `topic` now."""
        if self.local.set(topic, count) and topic in self.watchers:
            self.throttle.touch(topic, self.clock())

    def joined(self, sid: str, topic: str, sub: str | None) -> None:
        """A viewer whose token names it `sub` (None: anonymous) subscribed to `topic`."""
        if self._subs.get(sid, {}).get(topic) == sub:
            return
        self.left(sid, topic)
        if sub is None:
            return
        self._subs.setdefault(sid, {})[topic] = sub
        self.members.add(topic, sub, 1)
        if topic in self.member_watchers:
            self.throttle.touch(topic, self.clock())

    def left(self, sid: str, topic: str) -> None:
        subs = self._subs.get(sid)
        sub = subs.pop(topic, None) if subs is not None else None
        if subs is not None and not subs:
            del self._subs[sid]
        if sub is not None:
            self.members.add(topic, sub, -1)
            if topic in self.member_watchers:
                self.throttle.touch(topic, self.clock())

    def watch(self, sid: str, topic: str, members: bool = False) -> None:
        """Send `sid` the topic's `presence` events (with its member list: `members`)."""
        self.watchers.setdefault(topic, set()).add(sid)
        self._watching.setdefault(sid, set()).add(topic)
        if members:
            self.member_watchers.setdefault(topic, set()).add(sid)
        else:
            self._unwatch_members(sid, topic)

    def _unwatch_members(self, sid: str, topic: str) -> None:
        sids = self.member_watchers.get(topic)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self.member_watchers[topic]
                self._sent_members.pop(topic, None)

    def unwatch(self, sid: str, topic: str) -> None:
        topics = self._watching.get(sid)
        if topics is not None:
            topics.discard(topic)
            if not topics:
                del self._watching[sid]
        self._unwatch_members(sid, topic)
        sids = self.watchers.get(topic)
        if sids is None:
            return
        sids.discard(sid)
        if not sids:
            del self.watchers[topic]
            self.throttle.forget(topic)
            self._sent.pop(topic, None)

    def forget(self, sid: str) -> None:
        for topic in list(self._watching.get(sid, ())):
            self.unwatch(sid, topic)
        for topic in list(self._subs.get(sid, ())):
            self.left(sid, topic)

    def noted(self, topic: str) -> None:
        """Another instance's count of `topic` changed (its note on the topic's channel)."""
        if topic in self.watchers:
            self.throttle.touch(topic, self.clock())

    def resync(self) -> None:
        """The fan-out listener (re)subscribed: notes may have been missed meanwhile."""
        now = self.clock()
        for topic in self.watchers:
            self.throttle.touch(topic, now)

    async def count(self, topic: str) -> int:
        """The topic's viewer count now, this instance's own viewers counted exactly;
        raises RedisError or OSError."""
        return (await self.counts([topic]))[topic]

    async def counts(self, topics: Sequence[str]) -> dict[str, int]:
        """`count` of many topics in one round trip (for a topic directory)."""
        return await viewer_counts(
            self.redis, self.keys, topics, me=self.instance, local=self.local.get
        )

    async def member_list(self, topic: str) -> tuple[list[str], bool]:
        """Who watches the topic (`sub`s, sorted, capped) and whether there are more;
        raises RedisError or OSError."""
        return await viewer_members(
            self.redis, self.keys, topic, me=self.instance, local=self.members.of(topic)
        )

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except (RedisError, OSError) as exc:
                logger.warning("presence could not reach Redis: %s", exc)
                self.metrics.redis_error("presence")
            except Exception:
                logger.exception("presence tick failed")
            await asyncio.sleep(self.flush_s)

    async def tick(self) -> None:
        """One round: write what changed (and the heartbeat when due), reap dead
        instances when due, emit the events that are due."""
        now = self.clock()
        await self.flush(now)
        if now >= self._next_reap:
            self._next_reap = now + REAP_EVERY_S
            await self.reap()
        await self.emit(now)

    async def flush(self, now: float) -> None:
        heartbeat = now >= self._next_heartbeat
        if heartbeat and self._rewrite_next:
            self._rewrite_next = False
            self.local.mark_all()
            self.members.mark_all()
        changed = self.local.take()
        members = self.members.take()
        if not heartbeat and not changed and not members:
            return
        me, keys = self.instance, self.keys
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                if heartbeat:
                    ttl_ms = int(self.ttl_s * 1000)
                    pipe.eval(_HEARTBEAT, 1, keys.presence_instances(), me, ttl_ms)
                for topic, count in changed.items():
                    if count > 0:
                        pipe.hset(keys.presence(topic), me, count)
                        pipe.sadd(keys.presence_topics(me), topic)
                    else:
                        pipe.hdel(keys.presence(topic), me)
                        pipe.srem(keys.presence_topics(me), topic)
                # One HSET and one HDEL per topic, not a command per viewer: a connect
                # storm brings a new `sub` per connection (`python -m bench.storm`).
                counts: dict[str, dict[Any, Any]] = {}  # Any: as redis-py types `mapping`
                gone: dict[str, list[str]] = {}
                for (topic, sub), count in members.items():
                    if count > 0:
                        counts.setdefault(topic, {})[sub] = count
                    else:
                        gone.setdefault(topic, []).append(sub)
                for topic, mapping in counts.items():
                    pipe.hset(keys.presence_members(topic, me), mapping=mapping)
                for topic, subs in gone.items():
                    pipe.hdel(keys.presence_members(topic, me), *subs)
                for topic in changed.keys() | {topic for topic, _ in members}:
                    self._publish(pipe, topic, me)
                results = await pipe.execute()
        except BaseException:
            self.local.restore(changed)
            self.members.restore(members)
            raise
        if changed:
            self.metrics.presence_updates.inc(len(changed))
        if heartbeat:
            self._next_heartbeat = now + self.ttl_s / 3
            if results[0] and self._registered:
                # Taken for dead (a long pause) and reaped meanwhile: our fields are gone,
                # or going (a reaper may still be deleting them): write them all again.
                logger.warning("presence: this instance was taken for dead; rewriting counts")
                self.local.mark_all()
                self.members.mark_all()
                self._rewrite_next = True
            self._registered = True

    def _publish(self, pipe: Any, topic: str, instance: str) -> None:
        channel = self.keys.topic_channel(topic)
        if self.keys.cluster:
            pipe.spublish(channel, note(topic, instance))
        else:
            pipe.publish(channel, note(topic, instance))

    async def reap(self) -> None:
        """Remove the fields of instances whose heartbeat expired, and note each change.
        The ZREM elects one reaper per dead instance."""
        dead = await self.redis.eval(_EXPIRED, 1, self.keys.presence_instances(), REAP_BATCH)
        for raw in dead:
            instance = _text(cast(bytes, raw))
            if instance == self.instance:
                self._next_heartbeat = 0.0  # late: heartbeat now
                continue
            if not await self.redis.zrem(self.keys.presence_instances(), instance):
                continue  # another instance reaps it
            try:
                topics = await self.redis.smembers(self.keys.presence_topics(instance))
                await self._remove(instance, map(_text, topics))
            except (RedisError, OSError):
                # Put it back as expired, so that the next look (ours or another's) reaps it.
                await self.redis.zadd(self.keys.presence_instances(), {instance: 0})
                raise
            logger.info("presence: instance %s is gone; %d topic(s) updated", instance, len(topics))

    async def _remove(self, instance: str, topics: Iterable[str]) -> None:
        """Delete `instance`'s fields of `topics` and note each change."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for topic in topics:
                pipe.hdel(self.keys.presence(topic), instance)
                pipe.delete(self.keys.presence_members(topic, instance))
                self._publish(pipe, topic, instance)
            pipe.delete(self.keys.presence_topics(instance))
            await pipe.execute()

    async def emit(self, now: float) -> None:
        """Send the due topics' counts to their watchers, where the count changed."""
        self.throttle.expire(now)
        due = [topic for topic in self.throttle.pop_due(now) if topic in self.watchers]
        if not due:
            return
        try:
            counts = await viewer_counts(
                self.redis, self.keys, due, me=self.instance, local=self.local.get
            )
        except BaseException:
            for topic in due:  # try again after the interval
                self.throttle.touch(topic, now)
            raise
        at = int(time.time() * 1000)  # this instance's clock, as `ts` of events is
        for topic, count in counts.items():
            sids = self.watchers.get(topic, set())
            listed = self.member_watchers.get(topic, set())
            event = {"topic": topic, "count": count, "at": at}
            if self._sent.get(topic) != count:
                self._sent[topic] = count
                frame = Frame.event(PRESENCE_EVENT, event)
                for sid in sids - listed:
                    self.send(sid, frame)
            if listed:
                try:
                    await self._emit_members(topic, event, listed)
                except BaseException:
                    self.throttle.touch(topic, now)  # try again after the interval
                    raise

    async def _emit_members(self, topic: str, event: dict[str, Any], sids: set[str]) -> None:
        """The event with the member list, to the watchers that may see it, if it changed."""
        members, more = await self.member_list(topic)
        state = (event["count"], members, more)
        if self._sent_members.get(topic) == state:
            return
        self._sent_members[topic] = state
        frame = Frame.event(PRESENCE_EVENT, {**event, "members": members, "more_members": more})
        for sid in sids:
            self.send(sid, frame)

    # -- shutdown ------------------------------------------------------------------------------

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Stop, and take this instance out of every count at once (best effort: if Redis
        cannot be reached, the expiry does it)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if not self._registered:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._remove(self.instance, set(self.local.counts) | self.local.dirty)
                await self.redis.zrem(self.keys.presence_instances(), self.instance)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.info("presence: leaving it to the expiry (%s)", exc)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
