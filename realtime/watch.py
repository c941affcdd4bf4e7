"""`realtime watch` and `realtime publish`: command-line clients of a running server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import aiohttp
import socketio

from realtime import jsoncodec
from realtime.keys import SUBSCRIBE_EVENT, UPDATE_EVENT


def format_event(event: dict[str, Any]) -> str:
    """One line per event: topic, id, ts, data as compact JSON."""
    data = jsoncodec.dumps(event.get("data"))
    return f"{event.get('topic')} {event.get('id')} {event.get('ts')} {data}"


async def watch(
    url: str,
    topics: Sequence[str],
    stop: asyncio.Event,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    transports: Sequence[str] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Subscribe to `topics` (again after every reconnect) and print events until `stop`."""
    # handle_sigint=False: Ctrl-C is ours to handle (a clean stop), not engineio's.
    client = socketio.AsyncClient(reconnection=True, json=jsoncodec, handle_sigint=False)

    @client.on(UPDATE_EVENT)  # type: ignore[untyped-decorator]
    async def on_update(events: list[dict[str, Any]]) -> None:
        for event in events:
            try:
                print(format_event(event), file=out, flush=True)
            except BrokenPipeError:  # the reader went away (`realtime watch ... | head`)
                stop.set()
                return
            if on_event is not None:
                on_event(event)

    async def subscribe_all() -> None:
        for topic in topics:
            ack = await client.call(SUBSCRIBE_EVENT, {"topic": topic}, timeout=10)
            if not ack.get("ok"):
                print(f"subscribe {topic} refused: {ack.get('error')}", file=err, flush=True)
                stop.set()

    @client.event  # type: ignore[untyped-decorator]
    async def connect() -> None:
        # The connect handler runs inside the client's read loop: waiting for an ack
        # here would wait forever, so subscribe from a task of its own.
        client.start_background_task(subscribe_all)

    @client.event  # type: ignore[untyped-decorator]
    async def disconnect(reason: Any = None) -> None:
        if not stop.is_set():
            print(f"disconnected ({reason}); reconnecting", file=err, flush=True)

    await client.connect(url, transports=list(transports) if transports else None)
    try:
        await stop.wait()
    finally:
        await client.disconnect()


async def publish(
    url: str, topic: str, data: dict[str, Any], ts: int | None = None
) -> tuple[int, Any]:
    """POST one event; returns (status, JSON body)."""
    event: dict[str, Any] = {"topic": topic, "data": data}
    if ts is not None:
        event["ts"] = ts
    async with (
        aiohttp.ClientSession() as session,
        session.post(url.rstrip("/") + "/api/v1/events", json=event) as response,
    ):
        text = await response.text()
        try:
            return response.status, jsoncodec.loads(text)
        except jsoncodec.JSONDecodeError:
            return response.status, {"status": response.status, "body": text}
