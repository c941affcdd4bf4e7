"""Per-connection subscription state on a web instance: what each connection has been
sent, per topic, so that it gets every event once and in order.

Pure: no I/O, no clock. `realtime/delivery/hub.py` drives it with what arrives (live fan-out
batches) and what it reads (history pages), and sends what it returns.

A subscription is in one of two phases (the design notes say which).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from realtime.core.streamids import StreamId, parse_id
from realtime.delivery.conflate import Conflater

WireEvent = dict[str, Any]

DEFAULT_BUFFER_LIMIT = 10_000
_NO_CURSORS: Mapping[str, Cursor] = MappingProxyType({})

# Told of each change of a subscription (connection-state recovery's log):
# (sid, kind, topic, position, max_rate); kinds as in `realtime.delivery.recovery`.
Observer = Callable[[str, str, str, StreamId | None, float | None], None]


class Batch:
    """Events of one topic in id order, with their ids parsed once. A fan-out batch may
    come as the JSON of its events, as the worker published it (`json`): the shared
    frame is made of it as it is, and the events are decoded only if a connection
    needs fewer than all of them (`events`)."""

    __slots__ = ("_events", "ids", "json", "topic")

    def __init__(
        self,
        topic: str,
        events: list[WireEvent] | None,
        ids: list[StreamId],
        json: bytes | None = None,
    ) -> None:
        self.topic = topic
        self._events = events
        self.ids = ids
        self.json = json  # the events' JSON list, if they came as it (None: `events`)

    @classmethod
    def of(cls, topic: str, events: list[WireEvent]) -> Batch:
        return cls(topic, events, [parse_id(e["id"]) for e in events])

    @property
    def events(self) -> list[WireEvent]:
        if self._events is None:
            assert self.json is not None
            self._events = orjson.loads(self.json)
        return self._events

    @classmethod
    def merged(cls, topic: str, events: list[WireEvent]) -> Batch:
        """Several fan-out batches of one topic joined, in arrival order: any event at
        or below an id already seen is left out (a worker's retry republishes)."""
        kept: list[WireEvent] = []
        ids: list[StreamId] = []
        for event in events:
            event_id = parse_id(event["id"])
            if not ids or event_id > ids[-1]:
                kept.append(event)
                ids.append(event_id)
        return cls(topic, kept, ids)

    @classmethod
    def joined(cls, topic: str, parts: list[Batch]) -> Batch:
        """`merged`, of batches: when each part's ids increase and follow the part
        before (nearly always), the parts as they are, their JSON joined."""
        if len(parts) == 1 and len(parts[0].ids) == 1:
            return parts[0]  # one event, as most of small topics' messages
        ids: list[StreamId] = []
        parts = [part for part in parts if part.ids]
        for part in parts:
            if (ids and part.ids[0] <= ids[-1]) or not _increasing(part.ids):
                return cls.merged(topic, [e for p in parts for e in p.events])
            ids += part.ids
        if len(parts) <= 1:
            return parts[0] if parts else cls(topic, [], [])
        if all(part.json is not None for part in parts):
            inner = b",".join(part.json[1:-1] for part in parts if part.json is not None)
            return cls(topic, None, ids, b"[" + inner + b"]")
        return cls(topic, [e for p in parts for e in p.events], ids)

    def after(self, last: StreamId | None) -> list[WireEvent]:
        """The events with an id above `last` (all of them: the very same list)."""
        if last is None or not self.ids or self.ids[0] > last:
            return self.events
        return self.events[bisect.bisect_right(self.ids, last) :]


def _increasing(ids: list[StreamId]) -> bool:
    return all(a < b for a, b in itertools.pairwise(ids))


@dataclass(slots=True)
class Cursor:
    generation: int
    last: StreamId | None  # the newest id this connection has been sent (or told about)
    backlog: bool = True
    buffer: list[Batch] = field(default_factory=list)
    buffered: int = 0
    stale: bool = False  # the buffer may miss events: read history again before finishing
    suspended: bool = False  # its connection is behind: wait until it drained (`resume`)
    # `max_rate`: what is sent is merged and paced by it (kept across the phases).
    conflater: Conflater | None = None

    def takes_all(self, batch: Batch) -> bool:
        """Whether a live batch is all new to this live subscription without a
        `max_rate`: then it is taken whole (the fast path of `Subscriptions.live`)."""
        if self.backlog or self.conflater is not None:
            return False
        last = self.last
        if last is not None and batch.ids[0] <= last:
            return False
        self.last = batch.ids[-1]
        return True

    def take(self, batch: Batch) -> list[WireEvent]:
        out = batch.after(self.last)
        if out:
            self.last = batch.ids[-1]
        return out


@dataclass(frozen=True)
class Target:
    """One subscription a backlog is delivered to."""

    sid: str
    generation: int
    last: StreamId | None


class Subscriptions:
    """All subscriptions of this instance's connections: sid -> topic -> Cursor."""

    def __init__(self, buffer_limit: int = DEFAULT_BUFFER_LIMIT) -> None:
        self.buffer_limit = buffer_limit
        # Live events not sent because the connection already had them (a worker's
        # retry published them again, or a replay overlapped), ever: for the metrics.
        self.duplicates = 0
        self._connections: dict[str, dict[str, Cursor]] = {}
        self._members: dict[str, int] = {}  # topic -> connections subscribed to it
        self._generation = 0
        self._conflated: dict[str, int] = {}  # topic -> subscriptions with a max_rate
        self.observer: Observer | None = None

    def _cursor(self, sid: str, topic: str, generation: int | None = None) -> Cursor | None:
        cursor = self._connections.get(sid, {}).get(topic)
        if cursor is None or (generation is not None and cursor.generation != generation):
            return None
        return cursor

    def topics(self, sid: str) -> list[str]:
        return list(self._connections.get(sid, {}))

    def count(self) -> int:
        return sum(map(len, self._connections.values()))

    def members(self, topic: str) -> int:
        """How many connections are subscribed to the topic (the instance listens on
        the topic's fan-out channel while there is one)."""
        return self._members.get(topic, 0)

    def _joined(self, topic: str) -> None:
        self._members[topic] = self._members.get(topic, 0) + 1

    def _left(self, topic: str) -> None:
        left = self._members[topic] - 1
        if left:
            self._members[topic] = left
        else:
            del self._members[topic]

    def last(self, sid: str, topic: str) -> StreamId | None:
        cursor = self._cursor(sid, topic)
        return None if cursor is None else cursor.last

    def is_live(self, sid: str, topic: str) -> bool:
        cursor = self._cursor(sid, topic)
        return cursor is not None and not cursor.backlog

    # -- the backlog phase ----------------------------------------------------------------

    def conflater(self, sid: str, topic: str) -> Conflater | None:
        """The subscription's `max_rate` state, if it has one."""
        if topic not in self._conflated:  # the common case: one dict lookup
            return None
        cursor = self._cursor(sid, topic)
        return None if cursor is None else cursor.conflater

    def begin(
        self, sid: str, topic: str, last: StreamId | None, conflater: Conflater | None = None
    ) -> int:
        """Start (or restart) a subscription in the backlog phase; returns its generation,
        which every later backlog call must present (a newer subscribe wins)."""
        self._generation += 1
        cursors = self._connections.setdefault(sid, {})
        old = cursors.get(topic)
        if old is None:
            self._joined(topic)
        elif old.conflater is not None:
            self._unconflate(topic)
        cursors[topic] = Cursor(self._generation, last, conflater=conflater)
        if conflater is not None:
            self._conflated[topic] = self._conflated.get(topic, 0) + 1
        if self.observer is not None:
            rate = None if conflater is None else conflater.max_rate
            self.observer(sid, "S", topic, last, rate)
        return self._generation

    def position(self, sid: str, topic: str, generation: int, last: StreamId) -> None:
        """Set where the subscription starts, before anything was sent: the newest
        event when it subscribed (the client was sent it in the ack, or is not
        interested in older ones)."""
        cursor = self._cursor(sid, topic, generation)
        if cursor is not None:
            cursor.last = last
            if self.observer is not None:
                self.observer(sid, "P", topic, last, None)

    def replayed(self, sid: str, generation: int, batch: Batch) -> list[WireEvent]:
        """Events read from history for this subscription: the ones to send now."""
        cursor = self._cursor(sid, batch.topic, generation)
        if cursor is None or not cursor.backlog:
            return []
        return cursor.take(batch)

    def finish(self, sid: str, topic: str, generation: int) -> tuple[list[WireEvent], bool]:
        """End the backlog: the buffered events to send now, and True. If the buffer is
        stale, nothing and False: read history after `last` again, then finish."""
        cursor = self._cursor(sid, topic, generation)
        if cursor is None or not cursor.backlog:
            return [], True
        if cursor.stale:
            cursor.stale = False
            return [], False
        out: list[WireEvent] = []
        for batch in cursor.buffer:
            out += cursor.take(batch)
        cursor.buffer, cursor.buffered, cursor.backlog = [], 0, False
        if self.observer is not None:
            self.observer(sid, "L", topic, cursor.last, None)
        return out, True

    # -- the live phase -------------------------------------------------------------------

    def cursors(self, sid: str) -> Mapping[str, Cursor]:
        """A connection's subscriptions by topic (read them; change them through the
        methods here)."""
        return self._connections.get(sid, _NO_CURSORS)

    def live(self, sid: str, batch: Batch) -> list[WireEvent]:
        """A live batch for one connection: what to send it now (`batch.events` itself
        when it is all new, so the caller can share one encoded packet)."""
        cursor = self._cursor(sid, batch.topic)
        if cursor is None:
            return []
        if cursor.backlog:
            if cursor.stale:
                return []
            if cursor.buffered + len(batch.ids) > self.buffer_limit:
                cursor.buffer, cursor.buffered, cursor.stale = [], 0, True
            else:
                cursor.buffer.append(batch)
                cursor.buffered += len(batch.ids)
            return []
        out = cursor.take(batch)
        if len(out) != len(batch.ids):
            self.duplicates += len(batch.ids) - len(out)
        return out

    # -- a connection that fell behind ---------------------------------------------------

    def suspend(self, sid: str) -> bool:
        """The connection cannot take more for now: every subscription keeps only its
        position; live batches are dropped (history has them) until `resume`. Returns
        whether anything changed (False: it already was)."""
        changed = False
        cursors = self._connections.get(sid, {})
        for topic, cursor in cursors.items():
            if not cursor.suspended:
                self._generation += 1
                cursors[topic] = Cursor(
                    self._generation,
                    cursor.last,
                    stale=True,
                    suspended=True,
                    conflater=cursor.conflater,
                )
                changed = True
                if self.observer is not None and not cursor.backlog:
                    self.observer(sid, "O", topic, cursor.last, None)
        return changed

    def resume(self, sid: str) -> dict[str, list[Target]]:
        """The connection drained: its suspended subscriptions go back to the backlog
        phase, to be caught up from history after their positions (per topic). One
        without a position (live-only) just goes live again."""
        targets: dict[str, list[Target]] = {}
        cursors = self._connections.get(sid, {})
        for topic, cursor in cursors.items():
            if not cursor.suspended:
                continue
            self._generation += 1
            if cursor.last is None:
                cursors[topic] = Cursor(
                    self._generation, None, backlog=False, conflater=cursor.conflater
                )
                if self.observer is not None:
                    self.observer(sid, "L", topic, None, None)
                continue
            cursors[topic] = Cursor(self._generation, cursor.last, conflater=cursor.conflater)
            targets[topic] = [Target(sid, self._generation, cursor.last)]
        return targets

    def all_live(self, sid: str) -> bool:
        return all(not c.backlog for c in self._connections.get(sid, {}).values())

    # -- catch-up after the fan-out listener reconnected ----------------------------------

    def begin_catch_up(self) -> dict[str, list[Target]]:
        """The fan-out listener (re)subscribed: live events published while it was not
        subscribed were missed. Put every live subscription that has a position back into
        the backlog phase and return them per topic, to be caught up from history. A
        subscription already in its backlog reads history again before it finishes. (One
        without a position, live-only because history was unavailable when it
        subscribed, cannot catch up and stays live.)"""
        targets: dict[str, list[Target]] = {}
        for sid, cursors in self._connections.items():
            for topic, cursor in cursors.items():
                if cursor.backlog:  # (a suspended one is caught up when it resumes)
                    cursor.buffer, cursor.buffered, cursor.stale = [], 0, True
                    continue
                if cursor.last is None:
                    continue
                self._generation += 1
                cursors[topic] = Cursor(self._generation, cursor.last, conflater=cursor.conflater)
                targets.setdefault(topic, []).append(Target(sid, self._generation, cursor.last))
                if self.observer is not None:
                    self.observer(sid, "O", topic, cursor.last, None)
        return targets

    # -- ending ---------------------------------------------------------------------------

    @property
    def changes(self) -> int:
        """Grows whenever a subscription begins, ends or gets a new cursor: cursors
        looked up when it was N are still the subscriptions' while it is N."""
        return self._generation

    def end(self, sid: str, topic: str) -> None:
        self._generation += 1
        cursors = self._connections.get(sid)
        if cursors is not None:
            cursor = cursors.pop(topic, None)
            if cursor is not None:
                if self.observer is not None:
                    self.observer(sid, "U", topic, None, None)
                self._left(topic)
                if cursor.conflater is not None:
                    self._unconflate(topic)
            if not cursors:
                del self._connections[sid]

    def drop(self, sid: str) -> Sequence[str]:
        """Forget a connection; returns its topics."""
        self._generation += 1
        cursors = self._connections.pop(sid, {})
        for topic, cursor in cursors.items():
            self._left(topic)
            if cursor.conflater is not None:
                self._unconflate(topic)
        return list(cursors)

    def _unconflate(self, topic: str) -> None:
        left = self._conflated.get(topic, 0) - 1
        if left > 0:
            self._conflated[topic] = left
        else:
            self._conflated.pop(topic, None)
