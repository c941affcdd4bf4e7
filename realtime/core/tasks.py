"""Stopping background tasks for certain.

Python 3.11's `asyncio.wait_for`, which redis-py uses for every socket write, swallows a
cancellation that arrives just as the write completes (fixed in 3.12): the task carries
on as if never cancelled, and whoever waits for it to end waits forever. So a task is
cancelled again until it has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], *, again_after_s: float = 0.1) -> None:
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=again_after_s)
