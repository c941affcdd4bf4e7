"""Fan-out on a Redis Cluster, step 3 of the data path: sharded pub/sub (SPUBLISH /
SSUBSCRIBE, Redis 7), one connection per shard the instance needs. The reconnect loop,
its metrics and the catch-up are `ChannelListener`'s; this module supplies the cluster's
connection steps.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from realtime.core import jsoncodec
from realtime.core.connections import connect
from realtime.core.settings import Settings
from realtime.core.tasks import cancel_and_wait
from realtime.fanout.channels import IDLE_PING_S, ChannelListener
from realtime.fanout.manager import FanoutError, FanoutManager

logger = logging.getLogger(__name__)

Message = dict[str, Any]


def fanout_manager(settings: Settings, *, write_only: bool = False) -> FanoutManager:
    """The fan-out manager for these settings: sharded on a cluster, classic otherwise."""
    if settings.redis_cluster:
        return ShardedFanoutManager(settings, write_only=write_only)
    return FanoutManager(settings, write_only=write_only)


class ShardedFanoutManager(FanoutManager):
    name = "realtime-redis-sharded"

    def __init__(self, settings: Settings, *, write_only: bool = False) -> None:
        super().__init__(settings, write_only=write_only)
        self.channels = ShardedChannelListener(settings)

    async def _publish(self, data: Any) -> None:
        channel = self._channel_for(data)
        payload = jsoncodec.dumpb(data)
        try:
            if channel == self.channel:
                await self._client().publish(channel, payload)
            else:
                await self._client().spublish(channel, payload)
        except (RedisError, OSError) as exc:
            if self.write_only:
                raise FanoutError(f"publish to {channel} failed: {exc}") from exc
            logger.warning("fan-out publish failed: %s", exc)


class _Round:
    """One connection round's pub/sub connections: the common channel's, and one per
    shard (made by `sharded` as topics on new shards are subscribed), each read by its
    own task into one queue."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self.common = cluster.pubsub()
        self.sharded = cluster.pubsub()
        self.queue: asyncio.Queue[Message | Exception] = asyncio.Queue()
        self.readers: dict[int, asyncio.Task[None]] = {}
        self.sync: asyncio.Task[None] | None = None  # sends SSUBSCRIBE/SUNSUBSCRIBE

    def read_new_shards(self) -> None:
        for pubsub in [self.common, *self.sharded.node_pubsub_mapping.values()]:
            if id(pubsub) not in self.readers:
                self.readers[id(pubsub)] = asyncio.create_task(self._pump(pubsub))

    async def _pump(self, pubsub: PubSub) -> None:
        """Everything one connection receives, into the queue; its error last."""
        try:
            while True:
                connection: Any = getattr(pubsub, "connection", None)
                if connection is not None and not connection.is_connected:
                    # Reading now would reconnect without the catch-up.
                    raise RedisConnectionError("fan-out shard connection dropped")
                message = await pubsub.get_message(timeout=IDLE_PING_S)
                if message is None:
                    await pubsub.ping()
                else:
                    self.queue.put_nowait(message)
        except (RedisError, OSError) as exc:
            self.queue.put_nowait(exc)

    async def close(self, timeout_s: float) -> None:
        for reader in self.readers.values():
            await cancel_and_wait(reader)
        try:
            async with asyncio.timeout(timeout_s):
                for pubsub in (self.common, self.sharded):
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()
                await self.cluster.aclose()
        except (RedisError, OSError) as exc:
            logger.debug("closing the fan-out connections: %s", exc)


class ShardedChannelListener(ChannelListener):
    """`ChannelListener`'s loop (reconnects, metrics, catch-up) over a cluster round."""

    def _open(self) -> _Round:
        # Cluster mode: connect() made a RedisCluster (typed as Redis, see there).
        return _Round(cast(RedisCluster, connect(self.settings, retries=0)))

    async def _subscribe_all(self, conn: _Round) -> list[bytes]:
        await conn.cluster.initialize()
        return await self._subscribe_everything(conn)

    def _start_sync(self, conn: _Round) -> None:
        conn.sync = asyncio.create_task(self._sync_shards(conn))

    async def _read(self, conn: _Round) -> AsyncIterator[bytes]:
        assert conn.sync is not None
        while True:
            passed = self._handle(await self._next(conn.queue, conn.sync))
            if passed is not None:
                yield passed

    async def _close(self, conn: _Round) -> None:
        if conn.sync is not None:
            await cancel_and_wait(conn.sync)
        await asyncio.shield(conn.close(self.settings.redis_timeout_s))

    async def _subscribe_everything(self, conn: _Round) -> list[bytes]:
        """SUBSCRIBE the common channel, SSUBSCRIBE every wanted topic (on its shard), and
        wait until Redis confirmed each; returns the messages that arrived meanwhile."""
        self.interest.reset()
        self._dirty.clear()
        topics, _ = self.interest.plan()
        await conn.common.subscribe(self.common)
        for topic in topics:  # one by one: one SSUBSCRIBE may not span slots
            await conn.sharded.ssubscribe(self._channel(topic))
        conn.read_new_shards()
        held: list[bytes] = []
        left = 1 + len(topics)
        async with asyncio.timeout(self.settings.redis_timeout_s):
            while left:
                item = await conn.queue.get()
                if isinstance(item, Exception):
                    raise item
                if item["type"] in ("subscribe", "ssubscribe"):
                    left -= 1
                    confirmed = self._topics.get(item["channel"])
                    if confirmed is not None:
                        self.interest.answered(confirmed)
                elif item["type"] in ("message", "smessage"):
                    held.append(item["data"])
        return held

    async def _next(
        self, queue: asyncio.Queue[Message | Exception], sync: asyncio.Task[None]
    ) -> Message:
        getting = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait([getting, sync], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getting.done():
                getting.cancel()
        if not getting.done() or getting.cancelled():
            sync.result()  # its error ends this connection
            raise RedisConnectionError("fan-out subscription task ended")
        item = getting.result()
        if isinstance(item, Exception):
            raise item
        return item

    def _handle(self, message: Message) -> bytes | None:
        """A message's data to pass on, or None after bookkeeping."""
        kind = message["type"]
        if kind in ("message", "smessage"):
            data: bytes = message["data"]
            return data
        topic = self._topics.get(message["channel"])
        if kind == "ssubscribe" and topic is not None and self.interest.answered(topic):
            self._wake(topic)
        elif kind == "sunsubscribe" and topic is not None:
            if topic in self.interest.wanted:
                # Not ours: Redis ended it, the slot moved to another shard.
                raise RedisConnectionError(f"the channel of {topic} moved to another shard")
            del self._topics[message["channel"]]
        return None

    async def _sync_shards(self, conn: _Round) -> None:
        """Send what `want` changed, in order; a topic on a shard not yet listened to
        opens that shard's connection."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            subscribe, unsubscribe = self.interest.plan()
            if unsubscribe:
                await conn.sharded.sunsubscribe(*map(self.keys.topic_channel, unsubscribe))
            for topic in subscribe:
                await conn.sharded.ssubscribe(self._channel(topic))
            conn.read_new_shards()
