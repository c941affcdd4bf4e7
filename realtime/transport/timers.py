"""Timers that all wait the same delay, on one event-loop timer between them.

Every connection had two `loop.call_later` handles of its own: its next ping (every
`pingInterval`) and, for its first `connect_timeout_s`, the check that it joined a
namespace. tracemalloc put each at about 530 bytes plus uvloop's timer object behind it,
together about a quarter of an idle connection's memory. Since every entry of a queue
waits the same delay, entries fall due in the order they were added: a deque and one
timer armed for its head do the same, for a small list per entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


class DelayQueue(Generic[T]):
    """Calls `fire(item)` `delay` seconds after `add(item)`, unless cancelled."""

    def __init__(self, delay: float, fire: Callable[[T], None]) -> None:
        self.delay = delay
        self.fire = fire
        self._entries: deque[list[object]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, item: T) -> list[object]:
        """Schedule `item`; the returned entry cancels it (`cancel`)."""
        loop = asyncio.get_running_loop()
        entry: list[object] = [loop.time() + self.delay, item]
        self._entries.append(entry)
        if self._timer is None:
            self._timer = loop.call_at(entry[0], self._run)  # type: ignore[arg-type]
        return entry

    @staticmethod
    def cancel(entry: list[object]) -> None:
        """The item is not called, and no longer referenced from here."""
        entry[1] = None

    def _run(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        entries = self._entries
        while entries:
            due, item = entries[0]
            if due > now:  # type: ignore[operator]
                self._timer = loop.call_at(due, self._run)  # type: ignore[arg-type]
                return
            entries.popleft()
            if item is not None:
                try:
                    self.fire(item)  # type: ignore[arg-type]
                except Exception:  # one item's failure must not stop the others' timers
                    logger.exception("timer callback failed")
