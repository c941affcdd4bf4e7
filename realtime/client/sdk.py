"""The Python client SDK: topic subscriptions that survive reconnects, each event once.

Wraps python-socketio's `AsyncClient` and its reconnection (exponential backoff with
jitter) and adds what a dashboard or service needs on top.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import socketio

from realtime.client.session import SessionClient
from realtime.core import jsoncodec
from realtime.core.backoff import Backoff
from realtime.core.errors import describe
from realtime.core.keys import (
    CLOSING_EVENT,
    NAMESPACE,
    PRESENCE_EVENT,
    SUBSCRIBE_EVENT,
    UNSUBSCRIBE_EVENT,
    UPDATE_EVENT,
)
from realtime.core.streamids import StreamId, StreamIdError, parse_id

logger = logging.getLogger(__name__)

Event = dict[str, Any]
Ack = dict[str, Any]
EventsHandler = Callable[[list[Event]], Awaitable[None] | None]
TopicHandler = Callable[[str, Ack], Awaitable[None] | None]
# (topic, {"count", "at"} and, with the `presence_members` claim, "members", "more_members")
PresenceHandler = Callable[[str, dict[str, Any]], Awaitable[None] | None]
RefusedHandler = Callable[[str], Awaitable[None] | None]
# A token, or a function that returns a fresh one for every connect (tokens expire).
Token = str | Callable[[], str | Awaitable[str]]

UNAVAILABLE = "unavailable"


class ConnectRefused(socketio.exceptions.ConnectionError):  # type: ignore[misc]
    """The server refused the connection (e.g. its token); retrying will not help."""


class SubscribeError(Exception):
    """The server refused a subscription; `ack` is its answer."""

    def __init__(self, topic: str, ack: Ack) -> None:
        error = ack.get("error") or {}
        super().__init__(f"subscribe {topic} refused: {describe(error)}")
        self.topic = topic
        self.ack = ack
        self.code = error.get("code")


@dataclass
class _Topic:
    snapshot: int | None
    presence: bool = False  # ask for `presence` events
    max_rate: float | None = None  # merged and paced by the server
    start: int | None = None  # `from` (epoch ms), until the first event or position
    last: StreamId | None = None
    last_id: str | None = None
    acked: asyncio.Future[Ack] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    retry: Backoff = field(default_factory=lambda: Backoff(base_s=0.2, cap_s=5.0))


@dataclass
class ClientStats:
    """Counts a `RealtimeClient` keeps (`client.stats`): connects, duplicate events it
    dropped, and gaps (resumes answered `recovered: false`)."""

    connects: int = 0
    duplicates: int = 0  # events dropped because their id was not new
    gaps: int = 0  # resumes the server could not recover
    recovered: int = 0  # reconnects that got the whole session back (no resubscribe)


async def _call(handler: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    if handler is None:
        return
    result = handler(*args)
    if inspect.isawaitable(result):
        await result


class RealtimeClient:
    """A Socket.IO client of one or more realtime servers whose subscriptions survive
    reconnects and deliver every event once, in id order per topic.

    Use it as an async context manager (`async with RealtimeClient(urls, on_events=...)`)
    or call `connect()` and `close()`. `subscribe(topic)` follows a topic now and after
    every reconnect (with `since`, so the server replays what was missed); `stats`,
    `last_id(topic)`, `url` (the server of the latest attempt), `refusal` and `closing`
    (the server's reasons) are there to read.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        on_events: EventsHandler,
        on_gap: TopicHandler | None = None,
        on_error: TopicHandler | None = None,
        on_refused: RefusedHandler | None = None,
        on_presence: PresenceHandler | None = None,
        transports: Sequence[str] | None = None,
        token: Token | None = None,
        reconnection_delay: float = 0.5,
        reconnection_delay_max: float = 5.0,
        request_timeout: float = 10.0,
    ) -> None:
        """`on_events(events)`: new events, each once, in id order per topic.
        `on_gap(topic, ack)`: a resume was answered `recovered: false`: events after the
        last one you saw are gone from history (the events that follow are current).
        `on_error(topic, ack)`: the server refused a subscription (it is dropped).
        `token`: the JWT to connect with, or a function returning a fresh one (called
        on every connect). `on_refused(message)`: the server refused a reconnect (an
        expired token, say); the client stops reconnecting. `on_presence(topic, info)`:
        the viewer count of a topic subscribed with `presence=True` changed (`info`:
        `count`, `at`, and `members` with the `presence_members` claim)."""
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("give at least one server URL")
        self.on_events = on_events
        self.on_gap = on_gap
        self.on_error = on_error
        self.on_refused = on_refused
        self.on_presence = on_presence
        self._presence: dict[str, int] = {}  # topic -> the latest viewer count
        self.token = token
        self.refusal: str | None = None  # why the server refused the latest connect
        self.closing: dict[str, Any] | None = None  # the server's reason before it closed
        self.transports = list(transports) if transports else None
        self.request_timeout = request_timeout
        self.reconnection_delay = reconnection_delay
        self.reconnection_delay_max = reconnection_delay_max
        self.url: str | None = None  # the server of the latest connection attempt
        self.stats = ClientStats()
        self._attempts = 0
        self._topics: dict[str, _Topic] = {}
        self._closing = False
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # handle_sigint=False: Ctrl-C belongs to the application, not to engineio.
        self.sio = SessionClient(
            reconnection=True,
            reconnection_delay=reconnection_delay,
            reconnection_delay_max=reconnection_delay_max,
            json=jsoncodec,
            handle_sigint=False,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("connect_error", self._on_connect_error)
        self.sio.on(CLOSING_EVENT, self._on_closing)
        self.sio.on(UPDATE_EVENT, self._on_update_packet)
        self.sio.on(PRESENCE_EVENT, self._on_presence)

    # -- connection -----------------------------------------------------------------------

    def _next_url(self) -> str:
        """python-socketio asks for the URL on every (re)connect attempt: go round the
        list, so a dead server is left for the next one."""
        self.url = self.urls[self._attempts % len(self.urls)]
        self._attempts += 1
        return self.url

    async def connect(self) -> None:
        """Connect, trying the URLs in turn with backoff until one answers (or `close`).

        Later reconnects are python-socketio's, through the same URL rotation."""
        self._closing = False
        self._closed.clear()
        backoff = Backoff(base_s=self.reconnection_delay, cap_s=self.reconnection_delay_max)
        while True:
            self.refusal = None
            try:
                await self.sio.connect(
                    self._next_url,
                    transports=self.transports,
                    namespaces=[NAMESPACE],
                    wait_timeout=self.request_timeout,
                    auth=self._auth,
                )
                return
            except (socketio.exceptions.ConnectionError, ValueError) as exc:
                refusal = self._refused()
                if refusal is not None:
                    await self.sio.disconnect()
                    raise ConnectRefused(refusal) from None
                delay = backoff.next_delay()
                logger.info("cannot connect to %s (%s); next try in %.1fs", self.url, exc, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closed.wait()
            if self._closing:
                raise socketio.exceptions.ConnectionError("client closed")

    def _refused(self) -> str | None:
        # Set by the connect_error handler while `sio.connect` ran.
        return self.refusal

    async def _auth(self) -> dict[str, str]:
        """The token, and the resume token of the session to recover (if any)."""
        auth = self.sio.resume.auth()
        if self.token is None:
            return auth
        token = self.token() if callable(self.token) else self.token
        if inspect.isawaitable(token):
            token = await token
        return {"token": str(token), **auth}

    async def _on_connect_error(self, data: Any = None) -> None:
        # The server's refusal is a CONNECT_ERROR packet: {"message", "data"?}. A string
        # is python-socketio's own report of a transport failure: worth retrying.
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            self.refusal = data["message"]
            logger.warning("%s refused the connection: %s", self.url, self.refusal)

    async def _on_closing(self, reason: Any = None) -> None:
        self.closing = reason if isinstance(reason, dict) else {"message": str(reason)}
        logger.info("%s is closing the connection: %s", self.url, self.closing)

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected)

    async def close(self) -> None:
        self._closing = True
        self._closed.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sio.shutdown()

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _on_connect(self) -> None:
        self.stats.connects += 1
        recovered = self.sio.resume.recovered
        logger.info("connected to %s%s", self.url, " (session recovered)" if recovered else "")
        if recovered:
            self.stats.recovered += 1
        # This runs inside python-socketio's read loop, which must go on to read the
        # acks: subscribe from tasks of their own. A recovered session has its
        # subscriptions back (what it missed follows): only the unanswered ones go again.
        for topic, entry in self._topics.items():
            if not (recovered and entry.acked.done()):
                self._spawn(self._subscribe(topic))

    async def _on_disconnect(self, reason: Any = None) -> None:
        if self._closing:
            return
        logger.info("disconnected from %s (%s)", self.url, reason)
        if reason == self.sio.reason.SERVER_DISCONNECT:
            # python-socketio reconnects after a lost connection, not after the server
            # ended the session on purpose (a drain): reconnect here, to another server.
            self._spawn(self._rejoin())

    async def _rejoin(self) -> None:
        # The engine.io client finishes closing after this handler; give it a moment.
        await asyncio.sleep(self.reconnection_delay)
        if not self._closing and not self.connected:
            try:
                await self.connect()
            except ConnectRefused as exc:
                await _call(self.on_refused, str(exc))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- subscriptions --------------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        *,
        since: str | None = None,
        snapshot: int | None = None,
        start: int | None = None,
        presence: bool = False,
        max_rate: float | None = None,
    ) -> Ack:
        """Follow a topic, now and after every reconnect; returns the first ack.

        `since`: the id of the last event you already have (the server replays what came
        after it). `snapshot`: put the newest n events first (on every subscribe without
        a position, and after a gap). `start`: replay from this time (epoch ms, the
        protocol's `from`; the ack says whether history reached it: `complete`).
        `presence`: call `on_presence` as the topic's viewer count changes (the ack's
        count too); `presence(topic)` is the latest. `max_rate`: at most this many
        updates per second, merged. Raises SubscribeError if the server refuses."""
        if since is not None and start is not None:
            raise ValueError("give since or start, not both")
        entry = self._topics.get(topic)
        if entry is None:
            entry = self._topics[topic] = _Topic(snapshot, presence, max_rate, start)
        if since is not None:
            entry.last, entry.last_id = parse_id(since), since
        if self.connected:
            self._spawn(self._subscribe(topic))
        return await asyncio.shield(entry.acked)

    async def unsubscribe(self, topic: str) -> None:
        """Stop following a topic (and forget its last id)."""
        self._presence.pop(topic, None)
        if self._topics.pop(topic, None) is not None and self.connected:
            await self.sio.call(UNSUBSCRIBE_EVENT, {"topic": topic}, timeout=self.request_timeout)

    def presence(self, topic: str) -> int | None:
        """The latest viewer count of a topic subscribed with `presence=True`."""
        return self._presence.get(topic)

    def last_id(self, topic: str) -> str | None:
        """The id of the last event of `topic` delivered to you."""
        entry = self._topics.get(topic)
        return None if entry is None else entry.last_id

    async def _subscribe(self, topic: str) -> None:
        entry = self._topics.get(topic)
        if entry is None:
            return
        request: dict[str, Any] = {"topic": topic}
        resumed = entry.last_id is not None
        if resumed:
            request["since"] = entry.last_id
        elif entry.start is not None:
            request["from"] = entry.start
        if entry.snapshot is not None:
            request["snapshot"] = entry.snapshot
        if entry.presence:
            request["presence"] = True
        if entry.max_rate is not None:
            request["max_rate"] = entry.max_rate
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_ack(ack: Ack) -> None:
            # Runs in the read loop, before any packet that follows the ack: the state
            # it sets is in place for the replayed events.
            try:
                await self._on_ack(topic, entry, resumed, ack)
            finally:
                if not answered.done():
                    answered.set_result(None)

        try:
            await self.sio.emit(SUBSCRIBE_EVENT, request, namespace=NAMESPACE, callback=on_ack)
            await asyncio.wait_for(answered, self.request_timeout)
        except (socketio.exceptions.BadNamespaceError, TimeoutError) as exc:
            logger.info("subscribe %s not answered (%s); retried on the next connect", topic, exc)

    async def _on_ack(self, topic: str, entry: _Topic, resumed: bool, ack: Ack) -> None:
        if self._topics.get(topic) is not entry:
            return  # unsubscribed meanwhile
        if not isinstance(ack, dict) or not ack.get("ok"):
            error = ack.get("error", {}) if isinstance(ack, dict) else {}
            if error.get("code") == UNAVAILABLE:  # history down for a moment: try again
                self._spawn(self._retry(topic, entry))
                return
            del self._topics[topic]
            if not entry.acked.done():
                entry.acked.set_exception(SubscribeError(topic, ack))
            await _call(self.on_error, topic, ack)
            return
        entry.retry.reset()
        if resumed and ack.get("recovered") is False:
            self.stats.gaps += 1
            entry.last = entry.last_id = None  # the position no longer means anything
            await _call(self.on_gap, topic, ack)
        if not entry.acked.done():
            entry.acked.set_result(ack)
        if isinstance(ack.get("presence"), dict):
            await self._on_presence({"topic": topic, **ack["presence"]})
        events = ack.get("events")
        if isinstance(events, list) and events:
            await self._on_update(events)
        position = ack.get("since")
        if entry.last is None and isinstance(position, str):
            # Where the subscription starts: resume from it even if no event comes.
            with contextlib.suppress(StreamIdError):
                entry.last, entry.last_id = parse_id(position), position

    async def _retry(self, topic: str, entry: _Topic) -> None:
        await asyncio.sleep(entry.retry.next_delay())
        if self._topics.get(topic) is entry and self.connected:
            await self._subscribe(topic)

    async def _on_presence(self, info: Any) -> None:
        if not isinstance(info, dict) or not isinstance(info.get("count"), int):
            return
        topic = str(info.get("topic"))
        entry = self._topics.get(topic)
        if entry is None or not entry.presence:
            return  # unsubscribed meanwhile, or not asked for
        self._presence[topic] = info["count"]
        await _call(self.on_presence, topic, {k: v for k, v in info.items() if k != "topic"})

    async def _on_update_packet(self, events: list[Event], offset: Any = None) -> None:
        """An `update`: its events and, with recovery on, its offset (the last
        argument; a python-socketio handler with one parameter would get a TypeError)."""
        self.sio.resume.updated(offset)
        await self._on_update(events)

    async def _on_update(self, events: list[Event]) -> None:
        fresh = []
        for event in events:
            entry = self._topics.get(event.get("topic", ""))
            if entry is None:
                continue  # unsubscribed meanwhile
            try:
                event_id = parse_id(event["id"])
            except (KeyError, StreamIdError):
                logger.warning("dropping an event without a valid id: %r", event)
                continue
            if entry.last is not None and event_id <= entry.last:
                self.stats.duplicates += 1
                continue
            entry.last, entry.last_id = event_id, event["id"]
            fresh.append(event)
        if fresh:
            await _call(self.on_events, fresh)
