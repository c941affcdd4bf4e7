"""`realtime watch` and `realtime publish`: command-line clients of a running server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp

from realtime.client.sdk import ConnectRefused, RealtimeClient
from realtime.core import jsoncodec
from realtime.core.errors import describe
from realtime.core.streamids import is_stream_id
from realtime.core.topics import is_valid_topic


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
        print(f"subscribe {topic} refused: {describe(ack.get('error'))}", file=err, flush=True)
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


class UsageError(ValueError):
    """A command-line argument the command cannot use; the message says what to give."""


def server_url(raw: str) -> str:
    """`host:port`, `host` or a full URL -> `http(s)://host[:port]`, so a scheme-less
    address works rather than becoming `http:///socket.io/`."""
    text = raw.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {raw!r} is not a server address (e.g. http://127.0.0.1:8080)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"--url {raw!r} has an invalid port") from None
    return text


def check_topic(topic: str) -> str:
    if not is_valid_topic(topic):
        raise UsageError(
            f"{topic!r} is not a topic name: up to 128 of a-z 0-9 _ . : -, "
            "starting with a letter or a digit"
        )
    return topic


def check_since(since: str | None) -> str | None:
    if since is not None and not is_stream_id(since):
        raise UsageError(f"--since {since!r} is not an event id (like 1700000000000-0)")
    return since


def refusal(status: int, body: Any, retry_after: str | None) -> str:
    """What a refused publish means, in one line, with what to do about it."""
    error = body.get("error") if isinstance(body, dict) else None
    text = describe(error) if error else f"HTTP {status}"
    if status == 401:
        return f"{text} (pass --key, or set REALTIME_INGEST_KEY)"
    if status == 429:
        return f"{text} (retry in {retry_after or 'a few'} s)"
    if status == 503:
        return f"{text} (the server cannot reach Redis; retry later)"
    return text


async def publish(
    url: str, topic: str, data: dict[str, Any], ts: int | None = None, *, key: str = ""
) -> tuple[int, Any, str | None]:
    """POST one event (with the publish `key`, if any); returns (status, JSON body, the
    Retry-After header if any)."""
    event: dict[str, Any] = {"topic": topic, "data": data}
    if ts is not None:
        event["ts"] = ts
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url.rstrip("/") + "/api/v1/events", json=event, headers=headers) as response,
    ):
        text = await response.text()
        retry_after = response.headers.get("Retry-After")
        try:
            return response.status, jsoncodec.loads(text), retry_after
        except jsoncodec.JSONDecodeError:
            return response.status, {"status": response.status, "body": text}, retry_after
