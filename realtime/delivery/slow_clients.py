"""Slow clients, a step of delivery (the promise of bounded memory): a connection whose
backlog reaches its bound is suspended (its subscriptions keep only their positions,
nothing more is queued), caught up from history once it has drained, and disconnected
with a `closing` event if it stays behind for `REALTIME_SLOW_CLIENT_S` in all."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from realtime.core.keys import CLOSING_EVENT, SLOW_CLIENT
from realtime.core.metrics import WebMetrics
from realtime.delivery.subscriptions import Subscriptions, Target
from realtime.transport.frames import Frame
from realtime.transport.writer import Writer

logger = logging.getLogger(__name__)

_SOCKETIO_DISCONNECT = Frame(b"41")


class SlowClients:
    def __init__(
        self,
        subs: Subscriptions,
        writer: Callable[[str], Writer | None],
        metrics: WebMetrics,
        *,
        slow_client_s: float,
        resumed: Callable[[dict[str, list[Target]]], None],
        drop: Callable[[str], None],
    ) -> None:
        """`resumed(targets)`: catch these subscriptions up from history; `drop(sid)`:
        forget the connection's subscriptions."""
        self.subs = subs
        self.writer = writer
        self.metrics = metrics
        self.slow_client_s = slow_client_s
        self.resumed = resumed
        self.drop = drop
        self._behind: dict[str, asyncio.TimerHandle] = {}  # sid -> its disconnect timer

    def is_behind(self, sid: str) -> bool:
        return sid in self._behind

    def fell_behind(self, sid: str, socket: Writer) -> None:
        """The connection's backlog is at its bound: its subscriptions are suspended until
        it has drained, then caught up from history."""
        if sid not in self._behind:
            logger.info("client %s fell behind; its updates are held back", sid)
            loop = asyncio.get_running_loop()
            self._behind[sid] = loop.call_later(self.slow_client_s, self._too_slow, sid)
        if self.subs.suspend(sid):
            socket.notify_drained(functools.partial(self._drained, sid))

    def _drained(self, sid: str) -> None:
        self.resumed(self.subs.resume(sid))
        self.check_caught_up(sid)

    def check_caught_up(self, sid: str) -> None:
        if sid in self._behind and self.subs.all_live(sid):
            self._behind.pop(sid).cancel()
            logger.info("client %s caught up", sid)

    def _too_slow(self, sid: str) -> None:
        self._behind.pop(sid, None)
        socket = self.writer(sid)
        if socket is None:
            return
        logger.warning(
            "disconnecting client %s: behind for %gs (REALTIME_SLOW_CLIENT_S)",
            sid,
            self.slow_client_s,
        )
        self.drop(sid)
        self.metrics.disconnects.labels("slow_client").inc()
        reason = {
            "code": SLOW_CLIENT,
            "message": f"Too slow: the connection could not keep up for {self.slow_client_s:g}s.",
        }
        socket.abandon([Frame.event(CLOSING_EVENT, reason), _SOCKETIO_DISCONNECT])

    def forget(self, sid: str) -> None:
        """The connection is gone."""
        timer = self._behind.pop(sid, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._behind.values():
            timer.cancel()
        self._behind.clear()
