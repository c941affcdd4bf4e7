"""Pacing, a step of delivery: a subscription with `max_rate` gets at most one `update`
per 1/max_rate seconds for its topic, the merge of everything it was not sent yet
(`realtime.delivery.conflate`), flushed by a timer when no further event comes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from realtime.delivery.conflate import Conflater
from realtime.delivery.history import WireEvent
from realtime.delivery.subscriptions import Subscriptions
from realtime.transport.frames import Frame
from realtime.transport.writer import Writer


class Pacer:
    def __init__(
        self,
        subs: Subscriptions,
        writer: Callable[[str], Writer | None],
        push: Callable[[Writer, Frame], None],
        encode: Callable[[str, list[WireEvent]], Frame] | None = None,
    ) -> None:
        """`push(connection, frame)`: hand a connection a frame of its own (counted);
        `encode(sid, events)`: its `update` frame (with its recovery offset)."""
        self.subs = subs
        self.writer = writer
        self.push = push
        self.encode = encode if encode is not None else lambda _sid, events: Frame.update(events)
        # (sid, topic) -> the timer that sends a max_rate subscription's pending merge
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def pace(self, sid: str, conflater: Conflater, events: list[WireEvent]) -> list[WireEvent]:
        """Merge `events` into the subscription's pending merge; returns what may be sent
        now, and arms the timer for what must wait."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        out: list[WireEvent] = []
        for event in events:
            out += conflater.offer(event, now)
        due = conflater.due()
        key = (sid, conflater.topic)
        if due is not None and key not in self._timers:
            self._timers[key] = loop.call_at(due, self._flush, sid, conflater)
        return out

    def _flush(self, sid: str, conflater: Conflater) -> None:
        key = (sid, conflater.topic)
        self._timers.pop(key, None)
        if self.subs.conflater(sid, conflater.topic) is not conflater:
            return  # unsubscribed (or subscribed anew) meanwhile
        socket = self.writer(sid)
        if socket is None:
            return
        loop = asyncio.get_running_loop()
        out = [] if socket.backlog_full() else conflater.flush(loop.time())
        if out:
            self.push(socket, self.encode(sid, out))
        due = conflater.due()
        if due is not None:  # not sent (behind): try again an interval later
            self._timers[key] = loop.call_at(
                max(due, loop.time() + conflater.interval), self._flush, sid, conflater
            )

    def cancel(self, sid: str, topic: str | None = None) -> None:
        """Stop pacing `sid`'s subscription to `topic` (all of them: None)."""
        for key in [k for k in self._timers if k[0] == sid and topic in (None, k[1])]:
            self._timers.pop(key).cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
