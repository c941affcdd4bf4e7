"""Fan-out between processes: the python-socketio Redis client manager, made dependable.

The worker publishes room emits through a write-only instance; every web instance
listens and emits to its local room members. We subclass `socketio.AsyncRedisManager`
at its transport seam (`_publish` / `_listen`) rather than fork it:

- the channel name comes from `realtime.keys`;
- JSON goes through orjson;
- the worker does not publish through the manager: it takes the encoded messages
  (`encode_updates`) and publishes them inside its atomic commit, so an entry is
  acknowledged exactly when its events are in history and published;
- the listener reconnects with capped, jittered backoff and pings an idle connection so
  a dead one is noticed;
- on a web instance, `update` emits go through `realtime.delivery` (per-connection
  state: each event once, in order), and every time the listener has (re)subscribed,
  Redis having confirmed it, the instance's subscriptions catch up from history: what
  was published while it was not subscribed is not lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import socketio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime import jsoncodec
from realtime.backoff import Backoff
from realtime.connections import connect
from realtime.keys import NAMESPACE, UPDATE_EVENT, Keys
from realtime.settings import Settings

if TYPE_CHECKING:
    from realtime.delivery import Delivery

logger = logging.getLogger(__name__)

IDLE_PING_S = 15.0


class FanoutError(RuntimeError):
    """A publish to Redis failed; nothing was sent to the web instances."""


class FanoutManager(socketio.AsyncRedisManager):  # type: ignore[misc]
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
        self._publisher: Redis | None = None
        self.delivery: Delivery | None = None

    def attach(self, delivery: Delivery) -> None:
        """Deliver `update` emits through `delivery` (web instances)."""
        self.delivery = delivery

    # -- publishing (worker and web) ------------------------------------------------------

    def _client(self) -> Redis:
        if self._publisher is None:
            self._publisher = connect(self.settings)
        return self._publisher

    def _message(self, topic: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """The stock manager's emit message, as `AsyncPubSubManager.emit` builds it."""
        return {
            "method": "emit",
            "event": UPDATE_EVENT,
            "data": [events],
            "binary": False,
            "namespace": NAMESPACE,
            "room": topic,
            "skip_sid": None,
            "callback": None,
            "host_id": self.host_id,
        }

    def encode_updates(
        self, batches: Sequence[tuple[str, list[dict[str, Any]]]]
    ) -> list[tuple[str, bytes]]:
        """(channel, message) per (topic, events): what to PUBLISH for one `update` emit
        each. The worker publishes these inside its atomic commit."""
        return [
            (self.channel, jsoncodec.dumpb(self._message(topic, events)))
            for topic, events in batches
        ]

    async def _publish(self, data: Any) -> None:
        try:
            await self._client().publish(self.channel, jsoncodec.dumpb(data))
        except (RedisError, OSError) as exc:
            if self.write_only:
                raise FanoutError(f"publish to {self.channel} failed: {exc}") from exc
            logger.warning("fan-out publish failed: %s", exc)

    # -- listening (web) ------------------------------------------------------------------

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        if (
            self.delivery is not None
            and message.get("event") == UPDATE_EVENT
            and message.get("namespace", NAMESPACE) == NAMESPACE
            and isinstance(message.get("room"), str)
            and message.get("callback") is None
            and isinstance(data, list)
            and len(data) == 1
            and isinstance(data[0], list)
        ):
            await self.delivery.live(message["room"], data[0])
            return
        await super()._handle_emit(message)

    async def _subscribe(self, pubsub: Any) -> None:
        """SUBSCRIBE, and wait until Redis confirms it: from then on nothing published
        passes us by, so the catch-up that follows reads history late enough."""
        await pubsub.subscribe(self.channel)
        async with asyncio.timeout(self.settings.redis_timeout_s):
            while True:
                message = await pubsub.get_message(timeout=self.settings.redis_timeout_s)
                if message is not None and message["type"] == "subscribe":
                    return

    async def _listen(self) -> AsyncIterator[bytes]:
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        while True:
            client = connect(self.settings)
            pubsub = client.pubsub()
            try:
                await self._subscribe(pubsub)
                if backoff.attempt:
                    logger.info("fan-out listener reconnected to Redis")
                backoff.reset()
                if self.delivery is not None:
                    self.delivery.catch_up()
                while True:
                    message = await pubsub.get_message(timeout=IDLE_PING_S)
                    if message is None:
                        await pubsub.ping()
                    elif message["type"] == "message":
                        yield message["data"]
            except (RedisError, OSError) as exc:
                logger.warning("fan-out listener lost Redis: %s", exc)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()
            await asyncio.sleep(backoff.next_delay())

    async def aclose(self) -> None:
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None
