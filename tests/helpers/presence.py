"""Presence in tests: a client that records `presence` events, and the HTTP count."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.helpers.clients import Collector
from tests.helpers.waiting import eventually


class PresenceWatcher(Collector):
    """A client that records `presence` events (and `update`s, as Collector does)."""

    def __init__(self, name: str = "watcher") -> None:
        super().__init__(name)
        self.presence: list[dict[str, Any]] = []
        self.client.on("presence", self._on_presence)

    async def _on_presence(self, event: dict[str, Any]) -> None:
        async with self._changed:
            self.presence.append(event)
            self._changed.notify_all()

    async def wait_count(self, count: int, timeout: float = 15.0) -> None:
        def seen() -> bool:
            return bool(self.presence) and self.presence[-1]["count"] == count

        await self.wait_until(seen, f"presence count {count} (got {self.presence})", timeout)


async def http_count(
    url: str, topic: str, token: str | None = None, query: str = ""
) -> tuple[int, Any]:
    """`GET /api/v1/topics/{topic}/presence[?query]`: the status and the body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    address = f"{url}/api/v1/topics/{topic}/presence" + (f"?{query}" if query else "")
    async with (
        aiohttp.ClientSession() as session,
        session.get(address, headers=headers) as response,
    ):
        return response.status, await response.json()


async def counted_everywhere(urls: list[str], topic: str, expected: int) -> None:
    """Wait until every instance answers `expected`: another instance's viewers reach
    Redis within its flush interval (REALTIME_PRESENCE_FLUSH_MS)."""
    for url in urls:

        async def right(url: str = url) -> bool:
            return await http_count(url, topic) == (200, {"topic": topic, "count": expected})

        await eventually(right, f"count {expected} of {topic} at {url}")
