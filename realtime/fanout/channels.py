"""A web instance's one pub/sub connection to Redis: the fan-out listener.

It is always subscribed to the common channel (python-socketio's own messages between
instances) and to the channel of each topic the instance has a local subscriber of
(`want`), so an instance never receives, let alone decodes, traffic of topics it does not
host. The bookkeeping is `realtime/fanout/interest.py`; this module does the I/O.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # what redis-py's hiredis reader returns when it holds no whole reply
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - another redis-py layout: no draining
    _NOT_ENOUGH_DATA = None

from realtime.core.backoff import Backoff
from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.metrics import ProcessMetrics
from realtime.core.settings import Settings
from realtime.core.tasks import cancel_and_wait
from realtime.fanout.interest import Interest

logger = logging.getLogger(__name__)

IDLE_PING_S = 15.0


@dataclass
class _Connection:
    client: Redis
    pubsub: PubSub
    sync: asyncio.Task[None] | None = None  # sends SUBSCRIBE/UNSUBSCRIBE, pings


class ChannelListener:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys.of(settings)
        self.common = self.keys.fanout_channel()
        self.interest = Interest()
        self.metrics: ProcessMetrics | None = None  # counts Redis errors and reconnects
        self.on_subscribed: Callable[[], None] = lambda: None
        self.connected = False
        self._topics: dict[bytes, str] = {}  # channel name as Redis sends it -> topic
        self._dirty = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    # -- interest (called by realtime.delivery.hub) -------------------------------------------

    def want(self, topic: str, wanted: bool) -> None:
        """Listen on the topic's channel (or stop): on the instance's first local
        subscriber of it, and after its last one left."""
        if self.interest.want(topic, wanted):
            self._dirty.set()

    async def ready(self, topic: str) -> None:
        """Return once Redis has confirmed the topic's subscription; raises a
        RedisError if that takes longer than the Redis timeout (Redis is down)."""
        if self.connected and self.interest.is_confirmed(topic):
            return
        future = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(topic, [])
        waiters.append(future)
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                await future
        except TimeoutError:
            raise RedisTimeoutError(f"fan-out subscription to {topic} not confirmed") from None
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(topic, None)

    def _wake(self, topic: str) -> None:
        for future in self._waiters.get(topic, []):
            if not future.done():
                future.set_result(None)

    def _channel(self, topic: str) -> str:
        channel = self.keys.topic_channel(topic)
        self._topics[channel.encode()] = topic
        return channel

    # -- the connection -------------------------------------------------------------------

    async def messages(self) -> AsyncGenerator[bytes, None]:
        """Every message published on the channels listened on, forever (reconnecting).
        Close it (`aclose`) to stop: the connection is closed with it. The loop is the
        same for a Redis Cluster (`realtime.fanout.sharded`), which overrides the five
        connection steps below (`_open`, `_subscribe_all`, `_start_sync`, `_read`,
        `_close`)."""
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        while True:
            conn = self._open()
            try:
                held = await self._subscribe_all(conn)
                if backoff.attempt:
                    logger.info("fan-out listener reconnected to Redis")
                    if self.metrics is not None:
                        self.metrics.redis_reconnect("fanout")
                backoff.reset()
                self.connected = True
                self.on_subscribed()
                for topic in self.interest.confirmed:
                    self._wake(topic)
                self._start_sync(conn)
                for data in held:
                    yield data
                async for data in self._read(conn):
                    yield data
            except (RedisError, OSError) as exc:
                logger.warning("fan-out listener lost Redis: %s", exc)
                if self.metrics is not None:
                    self.metrics.redis_error("fanout")
            except Exception:
                # A bug must not silence this instance for good: start over (with the
                # catch-up), as after losing Redis.
                logger.exception("fan-out listener failed; reconnecting")
            finally:
                self.connected = False
                self.interest.reset()
                await self._close(conn)
            await asyncio.sleep(backoff.next_delay())

    # -- one connection (classic pub/sub) -------------------------------------------------

    def _open(self) -> Any:
        client = connect(self.settings, retries=0)
        return _Connection(client, client.pubsub())

    def _start_sync(self, conn: Any) -> None:
        conn.sync = asyncio.create_task(self._sync(conn.pubsub))

    async def _subscribe_all(self, conn: Any) -> list[bytes]:
        """SUBSCRIBE the common channel and every wanted topic, and wait until Redis
        confirmed each; returns the messages that arrived meanwhile."""
        pubsub = conn.pubsub
        self.interest.reset()
        self._dirty.clear()
        topics, _ = self.interest.plan()
        channels = [self.common, *map(self._channel, topics)]
        await pubsub.subscribe(*channels)
        held: list[bytes] = []
        left = len(channels)
        async with asyncio.timeout(self.settings.redis_timeout_s):
            while left:
                message = await pubsub.get_message(timeout=self.settings.redis_timeout_s)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    left -= 1
                    topic = self._topics.get(message["channel"])
                    if topic is not None:
                        self.interest.answered(topic)
                elif message["type"] == "message":
                    held.append(message["data"])
        return held

    async def _read(self, conn: Any) -> AsyncIterator[bytes]:
        pubsub, sync = conn.pubsub, conn.sync
        connection = pubsub.connection
        while True:
            if sync.done():
                sync.result()  # its error ends this connection
                raise RedisConnectionError("fan-out subscription task ended")
            if not getattr(connection, "is_connected", False):
                # A command of `_sync` failed and dropped it; reading now would reconnect
                # without the catch-up.
                raise RedisConnectionError("fan-out connection dropped")
            # A blocking read of the next reply, straight from the connection: the
            # pub/sub layers of `get_message` (retry, health check, a dict per
            # message) were most of a fan-out message's cost at 1,000 topics x 1
            # subscriber (py-spy, `python -m bench --scenarios small-topics`). No timer
            # per message either: `_sync` pings an idle connection instead.
            reply = await connection.read_response(
                timeout=math.inf, disconnect_on_error=False, push_request=True
            )
            if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                yield reply[2]
                # The replies already buffered (a worker's commit publishes a burst),
                # straight from hiredis: `read_response` per message (a timer check, a
                # `get_running_loop`, which is a getpid system call on 3.11) was a
                # fifth of a message's read at 1,000 topics x 1 (py-spy --native).
                reply = _buffered(connection)
                while type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                    yield reply[2]
                    reply = _buffered(connection)
                if reply is False:
                    continue
            if isinstance(reply, Exception):
                raise reply
            message = await pubsub.handle_message(reply)  # (un)subscribed, pong
            if message is None:
                continue
            if message["type"] == "message":  # (the check above took every one)
                yield message["data"]
            elif message["type"] == "subscribe":
                topic = self._topics.get(message["channel"])
                if topic is not None and self.interest.answered(topic):
                    self._wake(topic)
            elif message["type"] == "unsubscribe":
                topic = self._topics.get(message["channel"])
                if topic is not None and topic not in self.interest.wanted:
                    del self._topics[message["channel"]]

    async def _sync(self, pubsub: PubSub) -> None:
        """Send what `want` changed, in order, coalescing changes that come together; and
        a PING every IDLE_PING_S, so a dead connection is noticed even when idle."""
        while True:
            try:
                async with asyncio.timeout(IDLE_PING_S):
                    await self._dirty.wait()
            except TimeoutError:
                await pubsub.ping()
                continue
            self._dirty.clear()
            subscribe, unsubscribe = self.interest.plan()
            if unsubscribe:
                await pubsub.unsubscribe(*map(self.keys.topic_channel, unsubscribe))
            if subscribe:
                await pubsub.subscribe(*map(self._channel, subscribe))

    async def _close(self, conn: Any) -> None:
        """Close the connection; a dead Redis cannot keep shutdown waiting, and a second
        cancellation does not cut the closing short."""
        if conn.sync is not None:
            await cancel_and_wait(conn.sync)
        await asyncio.shield(self._disconnect(conn.client, conn.pubsub))

    async def _disconnect(self, client: Redis, pubsub: PubSub) -> None:
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                await client.aclose()
        except (RedisError, OSError) as exc:
            logger.debug("closing the fan-out connection: %s", exc)


def _buffered(connection: Any) -> Any:
    """The next reply already read from the socket, if the connection's parser is
    hiredis and holds a whole one; else False (`read_response` then reads it)."""
    reader = getattr(getattr(connection, "_parser", None), "_reader", None)
    if reader is None or _NOT_ENOUGH_DATA is None or not connection.is_connected:
        return False
    reply = reader.gets()
    return False if reply is _NOT_ENOUGH_DATA else reply
