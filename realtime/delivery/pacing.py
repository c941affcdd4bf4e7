"""Pacing, a step of delivery: a subscription with `max_rate` gets at most one `update`
per 1/max_rate seconds for its topic, the merge of everything it was not sent yet
(`realtime.delivery.conflate`), flushed by a timer when no further event comes.

`Pacing` is the timer part, keyed by whatever names a paced stream of one topic: a
Socket.IO subscription (`Pacer`, keyed by sid and topic) or an SSE reader's topic
(`realtime.delivery.streams`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from realtime.delivery.conflate import Conflater
from realtime.delivery.history import WireEvent
from realtime.delivery.subscriptions import Subscriptions
from realtime.transport.frames import Frame
from realtime.transport.writer import Writer

K = TypeVar("K", bound=Hashable)


class Pacing(Generic[K]):
    """The timers that send each paced stream's pending merge once it is due."""

    def __init__(self) -> None:
        self._timers: dict[K, asyncio.TimerHandle] = {}

    def offer(self, key: K, conflater: Conflater, events: list[WireEvent]) -> list[WireEvent]:
        """Merge `events` into the stream's pending merge; returns what may be sent now,
        and arms the timer for what must wait."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        out: list[WireEvent] = []
        for event in events:
            out += conflater.offer(event, now)
        due = conflater.due()
        if due is not None and key not in self._timers:
            self._timers[key] = loop.call_at(due, self._fire, key, conflater)
        return out

    def send_due(self, key: K, conflater: Conflater) -> bool:
        """The timer: send what `conflater.flush` gives now, if the stream can take it;
        False when the stream is gone (the timer stops)."""
        raise NotImplementedError

    def _fire(self, key: K, conflater: Conflater) -> None:
        self._timers.pop(key, None)
        if not self.send_due(key, conflater):
            return
        due = conflater.due()
        if due is not None:  # not sent (behind): try again an interval later
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_at(
                max(due, loop.time() + conflater.interval), self._fire, key, conflater
            )

    def cancel_where(self, match: Callable[[K], bool]) -> None:
        for key in [k for k in self._timers if match(k)]:
            self._timers.pop(key).cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


class Pacer(Pacing[tuple[str, str]]):
    """The Socket.IO subscriptions' pacing, keyed by (sid, topic)."""

    def __init__(
        self,
        subs: Subscriptions,
        writer: Callable[[str], Writer | None],
        push: Callable[[Writer, Frame], None],
        encode: Callable[[str, list[WireEvent]], Frame] | None = None,
    ) -> None:
        """`push(connection, frame)`: hand a connection a frame of its own (counted);
        `encode(sid, events)`: its `update` frame (with its recovery offset)."""
        super().__init__()
        self.subs = subs
        self.writer = writer
        self.push = push
        self.encode = encode if encode is not None else lambda _sid, events: Frame.update(events)

    def pace(self, sid: str, conflater: Conflater, events: list[WireEvent]) -> list[WireEvent]:
        return self.offer((sid, conflater.topic), conflater, events)

    def send_due(self, key: tuple[str, str], conflater: Conflater) -> bool:
        sid, topic = key
        if self.subs.conflater(sid, topic) is not conflater:
            return False  # unsubscribed (or subscribed anew) meanwhile
        socket = self.writer(sid)
        if socket is None:
            return False
        out = [] if socket.backlog_full() else conflater.flush(asyncio.get_running_loop().time())
        if out:
            self.push(socket, self.encode(sid, out))
        return True

    def cancel(self, sid: str, topic: str | None = None) -> None:
        """Stop pacing `sid`'s subscription to `topic` (all of them: None)."""
        self.cancel_where(lambda key: key[0] == sid and topic in (None, key[1]))
