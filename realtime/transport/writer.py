"""What delivery may do with a connection (`SocketServer.writer(sid)` hands it out): push
a frame, write to the fast lane, ask whether its backlog is full, be told when it has
drained, cut it off. `EngineSocket` is the one implementation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from realtime.transport.frames import Frame


class Writer(Protocol):
    def push(self, frame: Frame) -> None: ...

    def direct(self) -> asyncio.Transport | None: ...

    def backlog_full(self) -> bool: ...

    def notify_drained(self, callback: Callable[[], None]) -> None: ...

    def abandon(self, last: list[Frame]) -> None: ...
