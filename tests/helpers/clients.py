"""Socket.IO test clients (python-socketio's own client) that collect what they receive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import socketio

from realtime import jsoncodec


class Collector:
    """A python-socketio client that records every `update` event, in arrival order."""

    def __init__(self, name: str = "client") -> None:
        self.name = name
        self.client = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
        self.events: list[dict[str, Any]] = []
        self.ids: set[str] = set()
        self.packets = 0
        self._changed = asyncio.Condition()
        self.client.on("update", self._on_update)

    async def _on_update(self, events: list[dict[str, Any]]) -> None:
        async with self._changed:
            self.packets += 1
            self.events.extend(events)
            self.ids.update(e["id"] for e in events)
            self._changed.notify_all()

    async def connect(self, url: str, transports: Sequence[str] | None = None) -> Collector:
        await self.client.connect(
            url, transports=list(transports) if transports else None, wait_timeout=10
        )
        return self

    async def call(self, event: str, data: Any, timeout: float = 10) -> Any:
        return await self.client.call(event, data, timeout=timeout)

    async def subscribe(self, topic: str, **options: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.call("subscribe", {"topic": topic, **options})
        assert ack.get("ok"), f"{self.name}: subscribe {topic} refused: {ack}"
        return ack

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least `count` events arrived; fails with what did arrive."""
        await self.wait_until(lambda: len(self.events) >= count, f"{count} events", timeout)
        return self.events

    async def wait_for_id(self, event_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until the event `event_id` arrived."""
        await self.wait_until(lambda: event_id in self.ids, event_id, timeout)
        return self.events

    async def wait_until(
        self, condition: Callable[[], bool], what: str, timeout: float = 30.0
    ) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(condition), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"{self.name}: no {what} after {timeout}s ({len(self.events)} events)"
                ) from None

    def topic_events(self, topic: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["topic"] == topic]

    @property
    def transport(self) -> str:
        return str(self.client.transport())

    async def close(self) -> None:
        await self.client.disconnect()


async def post_events(
    base_url: str, events: Any, session: aiohttp.ClientSession | None = None
) -> list[str]:
    """POST to the ingest API; asserts 202 and returns the ids."""
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.post(base_url + "/api/v1/events", json=events) as response:
            body = await response.json()
            assert response.status == 202, f"ingest answered {response.status}: {body}"
            ids: list[str] = body["ids"]
            return ids
    finally:
        if own:
            await session.close()


def id_key(event_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence)."""
    ms, seq = event_id.split("-")
    return int(ms), int(seq)
