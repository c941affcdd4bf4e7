"""Socket.IO test clients (python-socketio's own client) that collect what they receive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import socketio

from realtime.client import RealtimeClient
from realtime.core import jsoncodec


class _Recording:
    """What both test clients share: events recorded under a condition to wait on."""

    name: str
    events: list[dict[str, Any]]
    _changed: asyncio.Condition

    def _state(self) -> str:
        raise NotImplementedError

    async def wait_until(
        self, condition: Callable[[], bool], what: str, timeout: float = 30.0
    ) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(condition), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"{self.name}: no {what} after {timeout}s ({self._state()})"
                ) from None


class Collector(_Recording):
    """A python-socketio client that records every `update` event, in arrival order."""

    def __init__(self, name: str = "client") -> None:
        self.name = name
        self.client = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
        self.events: list[dict[str, Any]] = []
        self.ids: set[tuple[str, str]] = set()  # (topic, id): ids are unique per topic only
        self.packets = 0
        self.arrivals: list[float] = []  # time.monotonic() of each `update` packet
        # ("ack", ack) and ("update", events) in the order the packets arrived.
        self.log: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()
        self.client.on("update", self._on_update)

    async def _on_update(self, events: list[dict[str, Any]], offset: str | None = None) -> None:
        # `offset`: connection-state recovery's, last in every `update` (docs/protocol.md)
        async with self._changed:
            self.packets += 1
            self.arrivals.append(time.monotonic())
            self.log.append(("update", events))
            self.events.extend(events)
            self.ids.update((e["topic"], e["id"]) for e in events)
            self._changed.notify_all()

    async def connect(self, url: str, transports: Sequence[str] | None = None) -> Collector:
        await self.client.connect(
            url, transports=list(transports) if transports else None, wait_timeout=10
        )
        return self

    async def call(self, event: str, data: Any, timeout: float = 10) -> Any:
        return await self.client.call(event, data, timeout=timeout)

    async def request(self, event: str, data: Any, timeout: float = 10) -> Any:
        """Like `call`, but the ack is logged in packet order (its callback runs in the
        client's read loop, before any later packet is handled)."""
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_ack(*args: Any) -> None:
            ack = args[0] if len(args) == 1 else list(args)
            self.log.append(("ack", ack))
            answered.set_result(ack)

        await self.client.emit(event, data, callback=on_ack)
        return await asyncio.wait_for(answered, timeout)

    async def subscribe(self, topic: str, **options: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.request("subscribe", {"topic": topic, **options})
        assert ack.get("ok"), f"{self.name}: subscribe {topic} refused: {ack}"
        return ack

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least `count` events arrived; fails with what did arrive."""
        await self.wait_until(lambda: len(self.events) >= count, f"{count} events", timeout)
        return self.events

    async def wait_for_id(
        self, event_id: str, topic: str | None = None, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Wait until the event `event_id` (of `topic`, or of the only topic) arrived."""

        def arrived() -> bool:
            if topic is not None:
                return (topic, event_id) in self.ids
            return any(i == event_id for _, i in self.ids)

        await self.wait_until(arrived, event_id, timeout)
        return self.events

    def _state(self) -> str:
        return f"{len(self.events)} events"

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


class Watcher(_Recording):
    """The SDK client (`realtime.client.RealtimeClient`), recording what it delivers:
    what an application using it sees."""

    def __init__(self, urls: str | Sequence[str], name: str = "sdk", **options: Any) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.ids: set[tuple[str, str]] = set()  # (topic, id): ids are unique per topic only
        self.gaps: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Condition()
        options.setdefault("reconnection_delay", 0.1)
        options.setdefault("reconnection_delay_max", 0.5)
        self.client = RealtimeClient(
            urls,
            on_events=self._on_events,
            on_gap=self._on_gap,
            on_error=lambda topic, ack: self.errors.append((topic, ack)),
            **options,
        )

    async def _on_events(self, events: list[dict[str, Any]]) -> None:
        async with self._changed:
            self.events.extend(events)
            self.ids.update((e["topic"], e["id"]) for e in events)
            self._changed.notify_all()

    async def _on_gap(self, topic: str, ack: dict[str, Any]) -> None:
        async with self._changed:
            self.gaps.append((topic, ack))
            self._changed.notify_all()

    async def start(self, *topics: str) -> Watcher:
        await asyncio.wait_for(self.client.connect(), 20)
        for topic in topics:
            await asyncio.wait_for(self.client.subscribe(topic), 20)
        return self

    def _state(self) -> str:
        return f"{len(self.events)} events, {self.client.stats}"

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        await self.wait_until(lambda: len(self.events) >= count, f"{count} events", timeout)

    async def wait_for_ids(self, last_ids: dict[str, str], timeout: float = 30.0) -> None:
        """Wait until each topic's event `last_ids[topic]` arrived."""
        wanted = set(last_ids.items())
        await self.wait_until(lambda: self.ids.issuperset(wanted), f"ids {wanted}", timeout)

    def topic_ids(self, topic: str) -> list[str]:
        return [e["id"] for e in self.events if e["topic"] == topic]

    async def close(self) -> None:
        await self.client.close()
