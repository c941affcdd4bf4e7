"""`realtime watch` and `realtime publish`: command-line clients of a running server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import aiohttp

from realtime.client import ConnectRefused, RealtimeClient
from realtime.core import jsoncodec


def format_event(event: dict[str, Any]) -> str:
    """One line per event: topic, id, ts, data as compact JSON."""
    data = jsoncodec.dumps(event.get("data"))
    return f"{event.get('topic')} {event.get('id')} {event.get('ts')} {data}"


async def watch(
    urls: str | Sequence[str],
    topics: Sequence[str],
    stop: asyncio.Event,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    transports: Sequence[str] | None = None,
    since: str | None = None,
    snapshot: int | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    token: str | None = None,
) -> int:
    """Print the events of `topics` until `stop`, resuming after every reconnect (the
    SDK, `realtime.client`); returns 1 if the server refused the connection or a topic,
    else 0."""
    refused = False

    def on_events(events: list[dict[str, Any]]) -> None:
        for event in events:
            try:
                print(format_event(event), file=out, flush=True)
            except BrokenPipeError:  # the reader went away (`realtime watch ... | head`)
                stop.set()
                return
            if on_event is not None:
                on_event(event)

    def on_gap(topic: str, ack: dict[str, Any]) -> None:
        print(f"{topic}: events were missed (history no longer holds them)", file=err, flush=True)

    def on_error(topic: str, ack: dict[str, Any]) -> None:
        nonlocal refused
        refused = True
        print(f"subscribe {topic} refused: {ack.get('error')}", file=err, flush=True)
        stop.set()

    def on_refused(message: str) -> None:
        nonlocal refused
        refused = True
        print(f"connection refused: {message}", file=err, flush=True)
        stop.set()

    client = RealtimeClient(
        urls,
        on_events=on_events,
        on_gap=on_gap,
        on_error=on_error,
        on_refused=on_refused,
        transports=transports,
        token=token,
    )

    async def connect() -> None:
        try:
            await client.connect()
        except ConnectRefused as exc:
            on_refused(str(exc))

    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(connect())]
    tasks += [
        asyncio.create_task(client.subscribe(t, since=since, snapshot=snapshot)) for t in topics
    ]
    try:
        await stop.wait()
    finally:
        await client.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return 1 if refused else 0


async def publish(
    url: str, topic: str, data: dict[str, Any], ts: int | None = None, *, key: str = ""
) -> tuple[int, Any]:
    """POST one event (with the publish `key`, if any); returns (status, JSON body)."""
    event: dict[str, Any] = {"topic": topic, "data": data}
    if ts is not None:
        event["ts"] = ts
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url.rstrip("/") + "/api/v1/events", json=event, headers=headers) as response,
    ):
        text = await response.text()
        try:
            return response.status, jsoncodec.loads(text)
        except jsoncodec.JSONDecodeError:
            return response.status, {"status": response.status, "body": text}
