"""Delivery to this web instance's connections: live fan-out batches, and the backlog of
a new subscription (replay after `since`, a snapshot) or of a catch-up after the fan-out
listener reconnected, all through the per-connection state of `realtime/subscriptions.py`
so every connection gets each event once and in order.

`subscribe` answers the ack; the events that follow it (replay, then buffered live ones)
are sent by a task started before the ack is returned. python-socketio queues the ack on
the connection as soon as the handler returns, with no suspension point in between, and
that task first runs at the next one: so the ack is always the first packet.

Sending: every decision of the subscription state is followed by its send without an
`await` that can suspend in between (an Engine.IO send only puts the packet on the
connection's queue), so packets leave in the order they were decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from engineio.exceptions import SocketIsClosedError
from redis.exceptions import RedisError
from socketio import packet

from realtime.backoff import Backoff
from realtime.history import HistoryReader, WireEvent, covers
from realtime.keys import NAMESPACE, UPDATE_EVENT
from realtime.socketserver import SocketServer
from realtime.streamids import ZERO, StreamId, format_id, parse_id
from realtime.subscriptions import Batch, Subscriptions, Target

logger = logging.getLogger(__name__)

T = TypeVar("T")

PAGE = 500  # events per replayed `update` packet and per history read


class HistoryUnavailable(Exception):
    """History could not be read, so a resume or snapshot cannot be answered."""


class Delivery:
    def __init__(self, sio: SocketServer, history: HistoryReader, subscriptions: Subscriptions):
        self.sio = sio
        self.history = history
        self.subs = subscriptions
        self._tasks: set[asyncio.Task[None]] = set()

    # -- sending --------------------------------------------------------------------------

    def _encode(self, events: list[WireEvent]) -> Any:
        return self.sio.packet_class(
            packet.EVENT, namespace=NAMESPACE, data=[UPDATE_EVENT, events]
        ).encode()

    async def _send(self, eio_sid: str, encoded: Any) -> None:
        # It may have disconnected meanwhile; its subscriptions go with it.
        with contextlib.suppress(SocketIsClosedError):
            await self.sio.eio.send(eio_sid, encoded)

    async def _send_to(self, sid: str, events: list[WireEvent]) -> None:
        if not events:
            return
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        if eio_sid is not None:
            await self._send(eio_sid, self._encode(events))

    async def live(self, topic: str, events: list[WireEvent]) -> None:
        """A fan-out batch of one topic for the local members of its room."""
        batch = Batch.of(topic, events)
        shared = None
        for sid, eio_sid in list(self.sio.manager.get_participants(NAMESPACE, topic)):
            out = self.subs.live(sid, batch)
            if not out:
                continue
            if out is batch.events:  # all new: the common case, one encoding for everyone
                shared = shared if shared is not None else self._encode(out)
                await self._send(eio_sid, shared)
            else:
                await self._send(eio_sid, self._encode(out))

    # -- subscriptions --------------------------------------------------------------------

    async def subscribe(
        self, sid: str, topic: str, since: StreamId | None, snapshot: int | None
    ) -> dict[str, Any]:
        """Join the topic and return the ack; what follows the ack is sent by a task.

        With `since`: `recovered` says whether history still holds everything after it;
        if not, `events` carries the newest `snapshot` (default 1) events instead. Without
        `since`, `snapshot: n` puts the newest n events in `events`. Unless the ack says
        `recovered: true`, it carries `since`: where the subscription starts (the newest
        event's id, `0-0` for none). Raises HistoryUnavailable when that cannot be
        answered (the subscription is undone); a plain subscribe then goes on live-only
        (and its ack has no `since`)."""
        generation = self.subs.begin(sid, topic, since)
        await self.sio.enter_room(sid, topic, namespace=NAMESPACE)
        ack: dict[str, Any] = {"ok": True, "topic": topic}
        page: list[WireEvent] = []
        try:
            if since is not None:
                wanted = 1 if snapshot is None else snapshot
                point = await self.history.resume(topic, since, PAGE, max(wanted, 1))
                ack["recovered"] = point.recovered
                if point.recovered:
                    page = point.page
                else:  # a gap: the newest events instead, and go on from the newest
                    ack["events"] = point.latest[-wanted:] if wanted else []
                    ack["since"] = self._position(sid, topic, generation, point.latest)
            else:
                latest = await self.history.latest(topic, max(snapshot or 0, 1))
                if snapshot:
                    ack["events"] = latest[-snapshot:]
                ack["since"] = self._position(sid, topic, generation, latest)
        except (RedisError, OSError) as exc:
            if since is not None or snapshot:
                await self.unsubscribe(sid, topic)
                raise HistoryUnavailable(str(exc)) from exc
            logger.warning("subscribed to %s live-only: history unavailable (%s)", topic, exc)
        self._spawn(self._backlog(topic, [Target(sid, generation, since)], page))
        return ack

    def _position(self, sid: str, topic: str, generation: int, latest: list[WireEvent]) -> str:
        """Start the subscription after the newest event; returns that position, which
        the ack carries (`since`) so that a client which receives nothing before it
        reconnects can still resume from it."""
        position = _newest(latest)
        self.subs.position(sid, topic, generation, position)
        return format_id(position)

    async def unsubscribe(self, sid: str, topic: str) -> None:
        self.subs.end(sid, topic)
        await self.sio.leave_room(sid, topic, namespace=NAMESPACE)

    def disconnected(self, sid: str) -> None:
        self.subs.drop(sid)

    # -- catch-up after the fan-out listener (re)subscribed -------------------------------

    def catch_up(self) -> None:
        """Called by the fan-out listener right after it (re)subscribed, before it reads
        any message: subscriptions are caught up from history (see subscriptions.py)."""
        targets = self.subs.begin_catch_up()
        if targets:
            logger.info(
                "catching %d subscription(s) up from history", sum(map(len, targets.values()))
            )
        for topic, group in targets.items():
            self._spawn(self._catch_up(topic, group))

    async def _catch_up(self, topic: str, targets: list[Target]) -> None:
        extent = await self._retrying(functools.partial(self.history.extent, topic))
        kept = []
        for target in targets:
            if target.last is not None and covers(extent, target.last, self.history.maxlen):
                kept.append(target)
            else:
                # History no longer holds what it missed: drop the connection; the
                # client reconnects, and its resubscribe is told `recovered: false`.
                logger.warning("subscription to %s cannot catch up; dropping its connection", topic)
                self.subs.drop(target.sid)
                await self.sio.drop(target.sid, NAMESPACE)
        await self._backlog(topic, kept, None)

    # -- the backlog phase ----------------------------------------------------------------

    async def _backlog(
        self, topic: str, targets: Sequence[Target], page: list[WireEvent] | None
    ) -> None:
        """Send `page` (or history read after the targets' positions), more pages while
        there are, then each target's buffered live events, and let them go live."""
        pending = list(targets)
        while pending:
            if page is None:
                start = min((self.subs.last(t.sid, topic) or ZERO for t in pending), default=ZERO)
                read = functools.partial(self.history.after, topic, start, PAGE)
                page = await self._retrying(read)
            batch = Batch.of(topic, page)
            for target in pending:
                await self._send_to(
                    target.sid, self.subs.replayed(target.sid, target.generation, batch)
                )
            if len(page) >= PAGE:
                page = None
                continue
            unfinished = []
            for target in pending:
                out, done = self.subs.finish(target.sid, topic, target.generation)
                await self._send_to(target.sid, out)
                if not done:
                    unfinished.append(target)
            pending, page = unfinished, None

    async def _retrying(self, read: Callable[[], Awaitable[T]]) -> T:
        """A history read, retried with backoff until Redis answers (the subscriptions
        wait in their backlog phase meanwhile; nothing is lost)."""
        backoff = Backoff(base_s=0.1, cap_s=5.0)
        while True:
            try:
                return await read()
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                logger.warning("history unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("backlog delivery failed", exc_info=task.exception())

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _newest(events: list[WireEvent]) -> StreamId:
    """The newest event's id; ZERO for no events (all that comes is after it)."""
    return parse_id(events[-1]["id"]) if events else ZERO
