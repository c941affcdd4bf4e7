"""Fan-out between processes, step 3 of the data path: the python-socketio Redis client
manager, made dependable and interest-based. The worker publishes each topic's `update`
on the topic's own channel (encoded by `realtime.core.wire`); this manager listens, on a
web instance, through `channels.py` and hands `update`s to delivery.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import socketio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.core import jsoncodec
from realtime.core.connections import connect
from realtime.core.keys import NAMESPACE, PRESENCE_EVENT, UPDATE_EVENT, Keys
from realtime.core.settings import Settings
from realtime.core.streamids import StreamIdError, parse_id
from realtime.core.tasks import cancel_and_wait
from realtime.core.topics import is_valid_topic
from realtime.core.wire import UpdateEncoder, Updates, split_update
from realtime.fanout.channels import ChannelListener
from realtime.fanout.rooms import RoomIndex

if TYPE_CHECKING:
    from realtime.delivery.hub import Delivery

logger = logging.getLogger(__name__)

MAX_VALID_ROOMS = 100_000  # room names remembered as valid (then forgotten, all at once)


class FanoutError(RuntimeError):
    """A publish to Redis failed; nothing was sent to the web instances."""


class FanoutManager(RoomIndex, socketio.AsyncRedisManager):  # type: ignore[misc]
    name = "realtime-redis"

    def __init__(self, settings: Settings, *, write_only: bool = False) -> None:
        super().__init__(
            url=settings.redis_url,
            channel=Keys(settings.prefix).fanout_channel(),
            write_only=write_only,
            logger=logger,
            json=jsoncodec,
        )
        self.settings = settings
        self.keys = Keys.of(settings)
        self._publisher: Redis | None = None
        self.delivery: Delivery | None = None
        self.channels = ChannelListener(settings)
        self.thread: asyncio.Task[None] | None = None
        self._encoder = UpdateEncoder(self.keys, self.host_id)
        self._valid_rooms: set[str] = set()  # room names `is_valid_topic` accepted
        self._fanout_latency: Any = None  # the delivery's histogram (`attach`)
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "emit": self._handle_emit,
            "disconnect": self._handle_disconnect,
            "enter_room": self._handle_enter_room,
            "leave_room": self._handle_leave_room,
            "close_room": self._handle_close_room,
            PRESENCE_EVENT: self._handle_presence,
        }

    def attach(self, delivery: Delivery) -> None:
        """Deliver `update` emits through `delivery`, and catch its subscriptions up
        whenever the listener has (re)subscribed (web instances)."""
        self.delivery = delivery
        self.channels.on_subscribed = delivery.catch_up
        self.channels.metrics = delivery.metrics
        self._fanout_latency = delivery.metrics.fanout_latency

    # -- publishing (worker and web) ------------------------------------------------------

    def _client(self) -> Redis:
        if self._publisher is None:
            self._publisher = connect(self.settings)
        return self._publisher

    def encode_updates(self, batches: Updates) -> list[tuple[str, bytes]]:
        """See `realtime.core.wire`: the worker's encoding, with this instance's host id."""
        return self._encoder.encode_updates(batches)

    def _channel_for(self, message: dict[str, Any]) -> str:
        """A topic's `update` emit goes on the topic's channel, the rest on the common one."""
        if message.get("method") == "emit" and _is_update(message):
            return self.keys.topic_channel(message["room"])
        return self.channel  # type: ignore[no-any-return]

    async def _publish(self, data: Any) -> None:
        channel = self._channel_for(data)
        try:
            await self._client().publish(channel, jsoncodec.dumpb(data))
        except (RedisError, OSError) as exc:
            if self.write_only:
                raise FanoutError(f"publish to {channel} failed: {exc}") from exc
            logger.warning("fan-out publish failed: %s", exc)

    # -- listening (web) ------------------------------------------------------------------

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if self.delivery is not None and self._is_update(message):
            sent_at = message.get("sent_at")
            if isinstance(sent_at, float):
                self._fanout_latency.observe(max(time.time() - sent_at, 0.0))
            self.delivery.offer(message["room"], message["data"][0])
            return
        await super()._handle_emit(message)

    def _is_update(self, message: dict[str, Any]) -> bool:
        """`_is_update`, with the room names found valid remembered: a regular
        expression per fan-out message showed in the profile of 1,000 topics x 1."""
        room = message.get("room")
        if room in self._valid_rooms:
            return _is_update(message, checked_room=True)
        if not _is_update(message):
            return False
        if len(self._valid_rooms) >= MAX_VALID_ROOMS:
            self._valid_rooms.clear()
        self._valid_rooms.add(message["room"])
        return True

    async def _handle_presence(self, message: dict[str, Any]) -> None:
        """Another instance's viewer count of a topic changed (realtime/delivery/presence.py)."""
        topic = message.get("topic")
        presence = self.delivery.presence if self.delivery is not None else None
        if presence is not None and isinstance(topic, str):
            presence.noted(topic)

    async def _thread(self) -> None:
        """The listening task, replacing the stock one: every message of the listener's
        channels, dispatched as the stock manager does. Cancelled by `aclose`, it closes
        its connection before it ends (the stock task leaves its generator to be
        finalised whenever, possibly after the loop is gone)."""
        async with contextlib.aclosing(self.channels.messages()) as messages:
            async for data in messages:
                message = self._take(data)
                if message is not None:
                    await self._dispatch(message)

    def _take(self, raw: bytes) -> dict[str, Any] | None:
        """Decode a message; a topic's `update` (nearly all of them) goes to delivery
        here, without a coroutine per message; returns the others, to dispatch."""
        if self.delivery is not None and self._take_split(self.delivery, raw):
            return None
        try:
            message = self.json.loads(raw)
        except ValueError:
            logger.warning("fan-out message that is not JSON dropped")
            return None
        if not isinstance(message, dict):
            return None
        delivery = self.delivery
        if (
            delivery is not None
            and message.get("method") == "emit"
            and message.get("host_id") != self.host_id
            and self._is_update(message)
        ):
            sent_at = message.get("sent_at")
            if isinstance(sent_at, float):
                self._fanout_latency.observe(max(time.time() - sent_at, 0.0))
            try:
                delivery.offer(message["room"], message["data"][0])
            except Exception:
                logger.exception("fan-out message %s failed", "emit")
            return None
        return message

    def _take_split(self, delivery: Delivery, raw: bytes) -> bool:
        """A worker's `update` message, its events left as JSON (`wire.split_update`):
        decoding them made most of a message's Python objects at 1,000 topics x 1, and
        the frame sent to each client is that JSON as it is. False if it is not one (an
        older worker's, the stock manager's, or ids that are not stream ids): decoded
        whole, as before."""
        split = split_update(raw)
        if split is None:
            return False
        head, events = split
        room, given = head.get("room"), head.get("ids")
        if room not in self._valid_rooms and not (isinstance(room, str) and self._valid_room(room)):
            return False
        if type(given) is not list or not given:
            return False
        try:
            ids = [parse_id(i) for i in given]
        except (StreamIdError, TypeError, AttributeError):
            return False
        if head.get("host_id") == self.host_id:
            return True  # this instance's own: not delivered again (as in `_dispatch`)
        sent_at = head.get("sent_at")
        if type(sent_at) is float:
            self._fanout_latency.observe(max(time.time() - sent_at, 0.0))
        try:
            delivery.offer_json(room, ids, events)
        except Exception:
            logger.exception("fan-out message %s failed", "emit")
        return True

    def _valid_room(self, room: str) -> bool:
        if not is_valid_topic(room):
            return False
        if len(self._valid_rooms) >= MAX_VALID_ROOMS:
            self._valid_rooms.clear()
        self._valid_rooms.add(room)
        return True

    async def _dispatch(self, message: dict[str, Any]) -> None:
        method = str(message.get("method"))
        try:
            if method == "callback":
                await self._handle_callback(message)
            elif message.get("host_id") != self.host_id:
                handler = self._handlers.get(method)
                if handler is not None:
                    await handler(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("fan-out message %s failed", method)

    async def aclose(self) -> None:
        """Stop listening (idempotent) and close the publishing connection."""
        if self.thread is not None:
            # Not again before its connection had time to close (see realtime.core.tasks).
            await cancel_and_wait(self.thread, again_after_s=1.0)
            self.thread = None
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None


def _is_update(message: dict[str, Any], *, checked_room: bool = False) -> bool:
    """A topic's `update` emit, as the worker publishes it (no callback, one argument:
    the list of events). `checked_room`: its room is known to be a valid topic."""
    data = message.get("data")
    room = message.get("room")
    return (
        message.get("event") == UPDATE_EVENT
        and message.get("namespace", NAMESPACE) == NAMESPACE
        and (checked_room or (isinstance(room, str) and is_valid_topic(room)))
        and message.get("callback") is None
        and not message.get("binary")
        and isinstance(data, list)
        and len(data) == 1
        and isinstance(data[0], list)
    )
