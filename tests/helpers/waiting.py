"""Waiting for state that sends no notification (Redis's side, a server's internals):
poll it until it holds, or fail with what was awaited. No sleeps as synchronisation
elsewhere."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    what: str = "condition",
    timeout: float = 10.0,
    interval: float = 0.02,
) -> None:
    """Return once `check()` (a plain or a coroutine function) is true; AssertionError
    naming `what` after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"no {what} after {timeout}s") from None
