"""The delivery hub, step 4 of the data path: live fan-out batches for this instance's
connections, and subscribe/unsubscribe (the ack, then replay or snapshot), all through
the per-connection state of `subscriptions.py`, so every connection gets each event once
and in order. Its parts: `catch_up.py` (backlogs from history), `pacing.py` (max_rate)
and `slow_clients.py` (bounded memory per connection).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from realtime.core.keys import NAMESPACE
from realtime.core.metrics import WebMetrics
from realtime.core.streamids import ZERO, StreamId, before, format_id, parse_id
from realtime.delivery.catch_up import PAGE, CatchUp, Page
from realtime.delivery.conflate import Conflater
from realtime.delivery.history import HistoryReader, WireEvent, reaches
from realtime.delivery.pacing import Pacer
from realtime.delivery.presence import Presence
from realtime.delivery.recovery import Recorder
from realtime.delivery.slow_clients import SlowClients
from realtime.delivery.streams import StreamReaders
from realtime.delivery.subscriptions import Batch, Cursor, Subscriptions, Target
from realtime.fanout.channels import ChannelListener
from realtime.transport.engine import EngineSocket
from realtime.transport.frames import Frame
from realtime.transport.server import SocketServer
from realtime.transport.writer import Writer

logger = logging.getLogger(__name__)


SLICE = 100  # connections handed a live batch between two returns to the event loop

# A room's local member as the fan-out finds it: sid, Engine.IO sid, its connection and
# its subscription's cursor for the room's topic.
Member = tuple[str, str, EngineSocket, Cursor]
Version = tuple[int, int]  # (room joins and leaves, subscription changes) so far


class HistoryUnavailable(Exception):
    """History could not be read, so a resume or snapshot cannot be answered."""


class Delivery:
    def __init__(
        self,
        sio: SocketServer,
        history: HistoryReader,
        subscriptions: Subscriptions,
        channels: ChannelListener,
        *,
        batch_tick_s: float = 0.0,
        slow_client_s: float = 30.0,
        metrics: WebMetrics | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        """`recorder`: connection-state recovery's log (None: recovery off, and
        `update` packets carry no offset)."""
        self.sio = sio
        self.history = history
        self.subs = subscriptions
        self.channels = channels
        self.batch_tick_s = batch_tick_s
        self.slow_client_s = slow_client_s
        self.metrics = metrics if metrics is not None else WebMetrics()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[str, list[Batch]] = {}  # topic -> batches within the tick
        # topic -> (sum of the pending events' arrival times, their count): their mean
        # arrival, for the `queue` stage of the metrics
        self._arrived: dict[str, tuple[float, int]] = {}
        self._offers = 0  # fan-out messages pending (merged into one batch per topic)
        # Events received and not counted in the metric yet: counted once per hand-out,
        # not per fan-out message (a lock each in prometheus_client).
        self._received = 0
        # batches to hand out, in order, with their (mean) arrival time (monotonic)
        self._queue: deque[tuple[Batch, float]] = deque()
        self._next_flush = 0.0  # loop time: pending events wait until then (see `live`)
        self._sender: asyncio.Task[None] | None = None  # hands out the queue while it has any
        self.recorder = recorder
        # Writes the recovery log's pending entries (set by the app with the recorder).
        self.log_written: Callable[[], Awaitable[None]] | None = None
        if recorder is not None:
            subscriptions.observer = recorder.changed
        self.pacer = Pacer(subscriptions, sio.writer, self._push, self._frame_for)
        self.slow = SlowClients(
            subscriptions,
            sio.writer,
            self.metrics,
            slow_client_s=slow_client_s,
            resumed=self._resumed,
            drop=self._drop,
        )
        self.catchup = CatchUp(
            history,
            subscriptions,
            self.metrics,
            send=self._send_paced,
            disconnect=self._disconnect,
            caught_up=self.slow.check_caught_up,
            mark=self._mark if recorder is not None else None,
        )
        # SSE readers (`GET /api/v1/stream`): fed the same live batches, same interest
        self.streams = StreamReaders(history, channels, self.metrics, self._interest)
        # topic -> its local members, found when the version was as given (`_route`)
        self._routes: dict[str, tuple[Version, list[Member]]] = {}
        # viewer counts and `presence` events; set by the app (`send_frame` is its sender)
        self.presence: Presence | None = None

    # -- sending ------------------------------------------------------------------------

    def _send_to(self, sid: str, events: list[WireEvent], page: Page | None = None) -> None:
        """Backlog events (a replay, a catch-up, what was buffered meanwhile): sent even
        past the connection's bound, since the subscription state already counts them
        as sent; past it, the connection is then treated as behind."""
        if not events:
            return
        socket = self.sio.writer(sid)
        if socket is not None:
            whole = page is not None and events is page.events
            self._push(socket, page.frame() if whole and page else self._frame_for(sid, events))
            self.metrics.events_delivered.labels("backlog").inc(len(events))
            if socket.backlog_full():
                self.slow.fell_behind(sid, socket)

    def _mark(self, sids: list[str], topic: str, events: list[WireEvent]) -> str | None:
        """The recovery offset of a frame of `events` (one topic, id order) to `sids`."""
        if self.recorder is None or not events:
            return None
        return self.recorder.frame(sids, topic, parse_id(events[-1]["id"]))

    def _frame_for(self, sid: str, events: list[WireEvent]) -> Frame:
        """An `update` frame of one connection's own."""
        return Frame.update(events, self._mark([sid], events[0]["topic"], events))

    def send_frame(self, sid: str, frame: Frame) -> None:
        """Hand one connection (by sid) a frame of its own, if it is still here."""
        socket = self.sio.writer(sid)
        if socket is not None:
            self._push(socket, frame)

    def _push(self, socket: Writer, frame: Frame) -> None:
        """Hand one connection a frame of its own (off the fast path), counted."""
        socket.push(frame)
        self.sio.traffic.sent(1, len(frame))

    async def live(self, topic: str, events: list[WireEvent]) -> None:
        """`offer`, as a coroutine."""
        self.offer(topic, events)

    def offer(self, topic: str, events: list[WireEvent]) -> None:
        """`take`, of decoded events."""
        self.take(Batch.of(topic, events))

    def offer_json(self, topic: str, ids: list[StreamId], events: bytes) -> None:
        """`take`, of the events' JSON list as published, and their ids: the shared
        frame is made of it, and the events are decoded only for a connection that
        needs part of them."""
        self.take(Batch(topic, None, ids, events))

    def take(self, batch: Batch) -> None:
        """A fan-out batch of one topic for the local members of its room.

        With a batch tick, events that arrive a tick or more after the last hand-out
        began go out at once; the ones that arrive sooner wait until then, and the ones
        that arrive while a batch is being handed out until a tick after it, and go out
        together, one packet per topic. Without one, each fan-out message is its own
        packet."""
        topic, n = batch.topic, len(batch.ids)
        self._received += n
        if self.streams.members(topic):
            self.streams.live(topic, batch.events)
        now = time.monotonic()
        if self.batch_tick_s <= 0:
            self._queue.append((batch, now))
        else:
            self._offers += 1
            pending = self._pending.get(topic)
            if pending is None:
                self._pending[topic] = [batch]
                self._arrived[topic] = (now * n, n)
            else:
                pending.append(batch)
                total, count = self._arrived[topic]
                self._arrived[topic] = (total + now * n, count + n)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_queued())
            self._sender.add_done_callback(self._sent)

    async def _send_queued(self) -> None:
        """Hand the queued batches to their rooms' members, SLICE connections at a time,
        returning to the event loop in between: a batch for a big room is many `send`
        calls (`python -m bench --scenarios fanout`), and ingest requests, fan-out
        messages and acks would wait behind all of it. Batches stay in order; a
        connection's events are decided and handed over together, so its packets stay
        in order too. With recovery on, every batch queued is numbered at once and
        their log entries sent in one write (`_number`)."""
        loop = asyncio.get_running_loop()
        merged = 0
        try:
            while True:
                if not self._queue:
                    if not self._pending:
                        return
                    wait = self._next_flush - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    pending, self._pending = self._pending, {}
                    arrived, self._arrived = self._arrived, {}
                    merged, self._offers = self._offers, 0
                    self._queue.extend(
                        (Batch.joined(t, parts), arrived[t][0] / max(arrived[t][1], 1))
                        for t, parts in pending.items()
                    )
                if self._received:
                    self.metrics.events_received.inc(self._received)
                    self._received = 0
                group = [(batch, at) for batch, at in self._queue if batch.ids]
                self._queue.clear()
                began = loop.time()
                if group:
                    await self._hand_out([batch for batch, _ in group], [at for _, at in group])
                if not self._queue:
                    # Under load (more arrived while this was handed out, or it merged
                    # several fan-out messages: some of what arrived during its last
                    # slice may not be read yet) the tick runs from the end of it: what
                    # arrives meanwhile waits and goes out together. Else from its
                    # start: a hand-out as long as a tick (a big room's) was the tick,
                    # and the next event goes at once, not a tick later (`python -m
                    # bench.latency` at 100 events/s).
                    loaded = bool(self._pending) or merged > 1
                    self._next_flush = (loop.time() if loaded else began) + self.batch_tick_s
        finally:
            self._sender = None

    async def _hand_out(self, group: list[Batch], received: list[float]) -> None:
        """Hand out batches, in order, returning to the event loop after every SLICE
        connections (a big room's batch in slices, small rooms' batches together).
        `received`: when each batch's events arrived (their mean, monotonic), for the
        stage metrics (realtime_stage_seconds: queue, recovery_log, handout)."""
        recorder = self.recorder
        stage = self.metrics.stage
        started = time.monotonic()
        offsets: list[str | None] = [None] * len(group)
        numbered = 0  # the log's entry count when the offsets were made
        logged = 0.0  # waited for the recovery log so far
        if recorder is not None:
            numbered = await self._number(recorder, group, offsets, 0)
            logged = time.monotonic() - started
        handed = 0
        try:
            for i, batch in enumerate(group):
                version, members = self._route(batch.topic)
                n = len(batch.ids)
                stage["queue"].observe(max(started - received[i], 0.0), n * len(members))
                shared: Frame | None = None
                for start in range(0, len(members), SLICE):
                    if handed >= SLICE:
                        handed = 0
                        await asyncio.sleep(0)
                    if recorder is not None and recorder.n != numbered:
                        # Logged since (a frame of one connection's own, a subscribe):
                        # a connection may have an offset after these; number the rest
                        # again, so each connection's offsets keep increasing.
                        waited = time.monotonic()
                        numbered = await self._number(recorder, group, offsets, i)
                        logged += time.monotonic() - waited
                        shared = None
                    current = self._version() == version
                    part = members[start : start + SLICE]
                    shared = self._deliver(batch, part, shared, current, offsets[i])
                    handed += len(part)
                    weight = n * len(part)
                    stage["handout"].observe(time.monotonic() - started, weight)
                    if recorder is not None:
                        stage["recovery_log"].observe(logged, weight)
        finally:
            if recorder is not None:
                recorder.handed_out()

    async def _number(
        self, recorder: Recorder, group: list[Batch], offsets: list[str | None], first: int
    ) -> int:
        """Give the batches from `first` on their frames' offsets (a log entry each),
        sent to Redis in one write before any client can get a frame (a SIGKILL then
        cannot lose the entry of a frame a client has: `SessionStore.write_log`), and
        numbered again if anything was logged while they were being sent. Returns the
        log's entry count then."""
        while True:
            for i in range(first, len(group)):
                offsets[i] = recorder.shared(group[i].topic, group[i].ids[-1])
            numbered = recorder.n
            if self.log_written is None:
                return numbered
            try:
                await self.log_written()
            except (RedisError, OSError) as exc:  # delivery goes on; the log catches up
                logger.debug("recovery log not written before a hand-out: %s", exc)
                return numbered
            if recorder.n == numbered:
                return numbered

    def _version(self) -> Version:
        return (self.sio.manager.room_changes, self.subs.changes)

    def _route(self, topic: str) -> tuple[Version, list[Member]]:
        """The topic's local members, kept from one batch to the next while no one
        joined or left a room and no subscription changed: looking each member's
        connection and cursor up again per batch was a large part of the Python time of
        a delivery (`python -m bench --scenarios fanout`)."""
        version = self._version()
        route = self._routes.get(topic)
        if route is not None and route[0] == version:
            return route
        writer = self.sio.writer
        cursors = self.subs.cursors
        members: list[Member] = []
        for sid, eio_sid in self.sio.manager.get_participants(NAMESPACE, topic):
            socket = writer(sid, eio_sid)
            cursor = cursors(sid).get(topic)
            if socket is not None and cursor is not None:
                members.append((sid, eio_sid, socket, cursor))
        route = self._routes[topic] = (version, members)
        return route

    def _sent(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("live delivery failed", exc_info=task.exception())

    def _deliver(
        self,
        batch: Batch,
        members: list[Member],
        shared: Frame | None,
        current: bool,
        offset: str | None = None,
    ) -> Frame | None:
        """Send a batch to some of the room's local members: one encoding for everyone
        who gets all of it (`shared`, returned for the next members), handed to each
        connection without suspending (so in order). Not `current`: rooms or
        subscriptions changed since `members` was made (between two slices of a
        hand-out), so each member's connection and cursor are looked up again.
        `offset`: the frame's recovery offset (None: recovery off)."""
        shared_clients = 0
        duplicates = self.subs.duplicates
        now_ms = time.time() * 1000
        writer = self.sio.writer
        cursors = self.subs.cursors
        topic = batch.topic
        if shared is None:
            if batch.json is None:
                shared = Frame.update(batch.events, offset)
            else:
                shared = Frame.update_json(batch.json, offset)
        data = shared.websocket
        for sid, eio_sid, member_socket, member_cursor in members:
            if current:
                socket, cursor = member_socket, member_cursor
            else:
                found = writer(sid, eio_sid)
                now_cursor = cursors(sid).get(topic)
                if found is None or now_cursor is None:
                    continue
                socket, cursor = found, now_cursor
            if not cursor.takes_all(batch):
                self._deliver_slowly(sid, socket, batch, now_ms, offset)
                continue
            # The fast path, nearly every member of a busy room: a live subscription
            # to which the batch is all new, a websocket with nothing waiting.
            shared_clients += 1
            transport = socket.direct()
            if transport is not None:
                transport.write(data)
                continue
            socket.push(shared)  # waits behind what is pending (or is dropped)
            if socket.backlog_full():
                self.slow.fell_behind(sid, socket)
        self.metrics.delivered_live([ms for ms, _ in batch.ids], shared_clients, now_ms)
        self.sio.traffic.sent(shared_clients, len(shared))  # once per slice, not per client
        if self.subs.duplicates != duplicates:
            self.metrics.events_dropped.labels("duplicate").inc(self.subs.duplicates - duplicates)
        return shared

    def _deliver_slowly(
        self, sid: str, socket: EngineSocket, batch: Batch, now_ms: float, offset: str | None
    ) -> None:
        """`_deliver` for a member off the fast path: behind, in its backlog phase,
        with a `max_rate`, or already sent part of the batch (that part carries the
        shared frame's offset: it leaves the connection where the whole would)."""
        if socket.backlog_full():
            self.slow.fell_behind(sid, socket)
            return
        out = self.subs.live(sid, batch)
        if not out:
            return
        conflater = self.subs.conflater(sid, batch.topic)
        if conflater is not None:
            out = self.pacer.pace(sid, conflater, out)
            if out:
                self._push(socket, self._frame_for(sid, out))
            return
        self._push(socket, Frame.update(out, offset))
        self.metrics.delivered_live([parse_id(e["id"])[0] for e in out], 1, now_ms)

    def _send_paced(
        self, sid: str, topic: str, events: list[WireEvent], page: Page | None = None
    ) -> None:
        """`_send_to` for backlog events, through the subscription's max_rate if any."""
        conflater = self.subs.conflater(sid, topic) if events else None
        if conflater is None:
            self._send_to(sid, events, page)
        else:
            self._send_to(sid, self.pacer.pace(sid, conflater, events))

    def _resumed(self, targets: dict[str, list[Target]]) -> None:
        for topic, group in targets.items():
            self._spawn(self.catchup.catch_up(topic, group))

    async def _disconnect(self, sid: str) -> None:
        self._drop(sid)
        await self.sio.drop(sid, NAMESPACE)

    # -- subscriptions --------------------------------------------------------------------

    async def subscribe(
        self,
        sid: str,
        topic: str,
        since: StreamId | None,
        snapshot: int | None,
        max_rate: float | None = None,
        presence: bool = False,
        *,
        start: int | None = None,
        sub: str | None = None,
        members: bool = False,
    ) -> dict[str, Any]:
        """Join the topic and return the ack; what follows the ack is sent by a task.

        With `since`: `recovered` says whether history still holds everything after it;
        if not, `events` carries the newest `snapshot` (default 1) events instead. Without
        `since`, `snapshot: n` puts the newest n events in `events`. Unless the ack says
        `recovered: true`, it carries `since`: where the subscription starts (the newest
        event's id, `0-0` for none). Raises HistoryUnavailable when that cannot be
        answered (the subscription is undone); a plain subscribe then goes on live-only
        (and its ack has no `since`). With `max_rate`, what follows the ack is merged and
        paced (the ack says `max_rate`; its `events` are not merged). With `start` (epoch
        ms, `from`): see `_from_time`. With `presence`, the ack carries `presence: {count,
        at}` and `presence` events follow (presence.py); `sub` names this viewer in member
        lists, which it sees itself with `members`."""
        if start is not None:
            since = before((start, 0))  # the catch-up of a `since` just before it
        self.pacer.cancel(sid, topic)
        conflater = None if max_rate is None else Conflater(topic, max_rate)
        # live events are buffered from now
        generation = self.subs.begin(sid, topic, since, conflater)
        self._interest(topic)
        if self.presence is not None:
            self.presence.joined(sid, topic, sub)
        await self.sio.enter_room(sid, topic, namespace=NAMESPACE)
        ack: dict[str, Any] = {"ok": True, "topic": topic}
        if max_rate is not None:
            ack["max_rate"] = max_rate
        if presence:
            await self._watch(sid, topic, ack, members)
        elif self.presence is not None:  # a subscribe again, without it this time
            self.presence.unwatch(sid, topic)
        page: list[WireEvent] = []
        try:
            # History is read after Redis confirmed the topic's channel: an event is in
            # what is read, or was published after it and arrives live (no gap).
            await self.channels.ready(topic)
            if start is not None and since is not None:
                page = await self._from_time(ack, topic, start, since, snapshot)
            elif since is not None:
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
        self._spawn(self.catchup.backlog(topic, [Target(sid, generation, since)], page))
        return ack

    async def _watch(self, sid: str, topic: str, ack: dict[str, Any], members: bool) -> None:
        """Send `sid` the topic's `presence` events, and put the count now (and the
        member list, if it may see it) in the ack; left out if Redis cannot say: the
        events follow once it can."""
        if self.presence is None:
            return
        self.presence.watch(sid, topic, members)
        if self.recorder is not None:
            self.recorder.watched(sid, topic)
        try:
            now: dict[str, Any] = {"count": await self.presence.count(topic)}
            if members:
                now["members"], now["more_members"] = await self.presence.member_list(topic)
        except (RedisError, OSError) as exc:
            logger.warning("presence count of %s unavailable (%s)", topic, exc)
            return
        ack["presence"] = {**now, "at": int(time.time() * 1000)}

    async def _from_time(
        self, ack: dict[str, Any], topic: str, start: int, since: StreamId, snapshot: int | None
    ) -> list[WireEvent]:
        """`subscribe {from}`: everything history holds from `start` on is replayed (in
        pages, by the backlog that also serves `since`), then live. The ack says
        `complete` (history reaches `start`) and `from`: `start` if so, else the time of
        the oldest event it holds after it. `snapshot: n` also puts the newest n events
        in the ack. Returns the first page."""
        point = await self.history.resume(topic, since, PAGE, max(snapshot or 0, 1))
        complete = reaches(point.extent, (start, 0), self.history.maxlen)
        first = parse_id(point.page[0]["id"])[0] if point.page and not complete else start
        ack.update({"from": first, "complete": complete})
        if snapshot:
            ack["events"] = point.latest[-snapshot:]
        return point.page

    def _position(self, sid: str, topic: str, generation: int, latest: list[WireEvent]) -> str:
        """Start the subscription after the newest event; returns that position, which
        the ack carries (`since`) so that a client which receives nothing before it
        reconnects can still resume from it."""
        position = _newest(latest)
        self.subs.position(sid, topic, generation, position)
        return format_id(position)

    async def unsubscribe(self, sid: str, topic: str) -> None:
        self.pacer.cancel(sid, topic)
        if self.presence is not None:
            self.presence.unwatch(sid, topic)
            self.presence.left(sid, topic)
        self.subs.end(sid, topic)
        self._interest(topic)
        await self.sio.leave_room(sid, topic, namespace=NAMESPACE)

    def disconnected(self, sid: str) -> None:
        self._drop(sid)
        self.slow.forget(sid)

    def _drop(self, sid: str) -> None:
        self.pacer.cancel(sid)
        if self.presence is not None:
            self.presence.forget(sid)
        for topic in self.subs.drop(sid):
            self._interest(topic)

    def _interest(self, topic: str) -> None:
        """Listen on the topic's fan-out channel while this instance has a subscriber."""
        viewers = self.subs.members(topic) + self.streams.members(topic)
        wanted = viewers > 0
        if self.presence is not None:
            self.presence.viewers(topic, viewers)
        if not self.subs.members(topic):
            self._routes.pop(topic, None)
        self.channels.want(topic, wanted)

    # -- catch-up after the fan-out listener (re)subscribed -------------------------------

    def catch_up(self) -> None:
        """Called by the fan-out listener right after it (re)subscribed, before it reads
        any message: subscriptions are caught up from history (see subscriptions.py)."""
        self.streams.catch_up()
        if self.presence is not None:
            self.presence.resync()
        targets = self.subs.begin_catch_up()
        if targets:
            logger.info(
                "catching %d subscription(s) up from history", sum(map(len, targets.values()))
            )
        for topic, group in targets.items():
            self._spawn(self.catchup.catch_up(topic, group))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("backlog delivery failed", exc_info=task.exception())

    async def aclose(self) -> None:
        self.slow.close()
        self.pacer.close()
        await self.streams.aclose()
        tasks = [*self._tasks, *([self._sender] if self._sender is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _newest(events: list[WireEvent]) -> StreamId:
    """The newest event's id; ZERO for no events (all that comes is after it)."""
    return parse_id(events[-1]["id"]) if events else ZERO
