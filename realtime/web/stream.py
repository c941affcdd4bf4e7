"""`GET /api/v1/stream?topic=a&topic=b`: topics as Server-Sent Events, for curl, scripts
and a browser's `EventSource` (step 5, sending, over plain HTTP).

Each event is a message `event: update` with `data: {"topic","id","ts","data"}` and an
`id:` that holds every topic's position (`realtime.core.sse`); a reconnect that sends it
back (`Last-Event-ID`, or `?last_event_id=`) replays exactly what it missed on each topic
(`realtime.delivery.streams`). Auth is the `subscribe` rule: a JWT as `Authorization:
Bearer` or, for `EventSource`, which cannot send headers, as `?token=`. Refusals are JSON
errors (400/401/403/503) before the stream starts. A comment (`: ping`) every
REALTIME_SSE_HEARTBEAT_S keeps proxies from closing an idle stream; a drain ends each
stream with a `retry:` hint; a reader that stops reading is cut at its backlog bound.
`max_rate` (Hz) merges and paces each topic's events as `subscribe {max_rate}` does.
`from` (epoch ms) replays each topic from that time, as `subscribe {from}` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from realtime.core import errors, sse
from realtime.core.metrics import WebMetrics
from realtime.core.settings import Settings
from realtime.core.streamids import StreamId, StreamIdError, before, parse_id
from realtime.core.topics import MAX_RATE_HZ, MIN_RATE_HZ, is_valid_topic
from realtime.delivery.drain import Drain
from realtime.delivery.streams import SLOW, StreamReader, StreamReaders
from realtime.web.auth import AuthError, TokenVerifier
from realtime.web.topic_events import bearer_token

logger = logging.getLogger(__name__)

STREAM_PATH = "/api/v1/stream"
MAX_SNAPSHOT = 100
PARAMETERS = frozenset({"topic", "since", "from", "snapshot", "max_rate", "last_event_id", "token"})
RATE_RE = re.compile(r"^[0-9]{1,6}(?:\.[0-9]{1,6})?$")
MS_RE = re.compile(r"^[0-9]{1,15}$")  # epoch milliseconds
RETRY_MS = (500, 3000)  # the drain's `retry:` hint, spread so clients do not come at once


class QueryError(ValueError):
    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("Invalid query.")
        self.fields = fields


@dataclass(frozen=True)
class StreamQuery:
    starts: dict[str, StreamId | None]  # topic -> the position to resume after (None: now)
    snapshot: int
    max_rate: float | None = None  # merge and pace each topic to this many updates/s
    ranged: dict[str, int] = field(default_factory=dict)  # topic -> `from` (epoch ms)


def parse_query(
    topics: list[str], query: Mapping[str, str], last_event_id: str, max_topics: int
) -> StreamQuery:
    """The request as topics and their starts (pure): `Last-Event-ID` first, then
    `since` (for every topic), else from now. QueryError names every bad parameter."""
    problems: dict[str, list[str]] = {}
    for name in sorted(set(query) - PARAMETERS):
        problems[name] = ["Unknown parameter."]
    if not topics:
        problems["topic"] = ["At least one topic is required."]
    elif not all(map(is_valid_topic, topics)):
        problems["topic"] = ["Not a topic."]
    elif len(set(topics)) > max_topics:
        problems["topic"] = [f"At most {max_topics} topics."]
    since: StreamId | None = None
    if query.get("since"):
        try:
            since = parse_id(query["since"])
        except StreamIdError:
            problems["since"] = ["Must be an event id."]
    start: int | None = None
    raw = query.get("from", "")
    if raw:
        if not MS_RE.match(raw):
            problems["from"] = ["Must be a time in epoch milliseconds."]
        elif "since" in query or "snapshot" in query:
            problems["from"] = ["Give from, or since and snapshot, not both."]
        else:
            start = int(raw)
    snapshot = 0
    raw = query.get("snapshot", "")
    if raw:
        if raw.isascii() and raw.isdigit() and int(raw) <= MAX_SNAPSHOT:
            snapshot = int(raw)
        else:
            problems["snapshot"] = [f"Must be a whole number from 0 to {MAX_SNAPSHOT}."]
    max_rate = None
    raw = query.get("max_rate", "")
    if raw:
        if RATE_RE.match(raw) and MIN_RATE_HZ <= float(raw) <= MAX_RATE_HZ:
            max_rate = float(raw)
        else:
            problems["max_rate"] = [f"Must be a number from {MIN_RATE_HZ} to {MAX_RATE_HZ}."]
    resumed: dict[str, StreamId] = {}
    try:
        resumed = sse.decode_position(last_event_id)
    except sse.PositionError:
        problems["last_event_id"] = ["Not a stream position this server gave."]
    if problems:
        raise QueryError(problems)
    starts = {topic: resumed.get(topic, since) for topic in dict.fromkeys(topics)}
    ranged: dict[str, int] = {}
    if start is not None:  # as `subscribe {from}`: the catch-up of a `since` before it
        for topic in starts:
            if topic not in resumed:
                starts[topic], ranged[topic] = before((start, 0)), start
    return StreamQuery(starts, snapshot, max_rate, ranged)


class EventStream:
    """The handler: the `subscribe` rule, then one reader for the stream's life."""

    def __init__(
        self,
        settings: Settings,
        streams: StreamReaders,
        verifier: TokenVerifier | None,
        drain: Drain,
        metrics: WebMetrics,
        start_listening: Callable[[], None],
    ) -> None:
        self.start_listening = start_listening  # the fan-out listener, on first use
        self.settings = settings
        self.streams = streams
        self.verifier = verifier
        self.drain = drain
        self.metrics = metrics

    async def handle(self, request: web.Request) -> web.StreamResponse:
        topics = request.query.getall("topic", [])
        expires_at: float | None = None
        if self.verifier is not None:
            token = bearer_token(request) or request.query.get("token", "")
            try:
                grant = self.verifier.verify({"token": token})
            except AuthError as exc:
                return _error(401, errors.UNAUTHORIZED, str(exc))
            refused = [t for t in topics if not grant.allows(t)]
            if refused:
                return _error(403, errors.FORBIDDEN, f"This token may not read {refused[0]}.")
            expires_at = grant.expires_at
        last_event_id = request.headers.get("Last-Event-ID") or request.query.get(
            "last_event_id", ""
        )
        try:
            query = parse_query(
                topics, request.query, last_event_id, self.settings.max_subscriptions
            )
        except QueryError as exc:
            return _error(400, errors.INVALID, str(exc), exc.fields)
        if self.drain.draining:
            return _error(503, errors.UNAVAILABLE, "This instance is shutting down.", retry=True)
        self.start_listening()
        reader = StreamReader(self.settings.client_backlog_bytes, query.max_rate)
        try:
            await self.streams.open(reader, query.starts, query.snapshot, query.ranged)
        except (RedisError, OSError) as exc:
            logger.warning("refused a stream: history unavailable (%s)", exc)
            return _error(503, errors.UNAVAILABLE, "History cannot be read now.", retry=True)
        try:
            return await self._stream(request, reader, expires_at)
        finally:
            self.streams.close(reader)

    async def _stream(
        self, request: web.Request, reader: StreamReader, expires_at: float | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx (and ingress-nginx): pass it on as it comes
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        # Last in the queue: the position after everything queued so far.
        reader.write(sse.position_only(reader.position()))
        heartbeat_s = self.settings.sse_heartbeat_s
        ending: asyncio.Future[Any] = asyncio.ensure_future(self.drain.ending.wait())
        try:
            while reader.cut is None and not ending.done():
                if expires_at is not None and time.time() >= expires_at:
                    break  # the token expired: the client comes back with a fresh one
                data = reader.take()
                if data:
                    if not await self._write(response, data, reader, ending):
                        break
                    continue
                woken: asyncio.Future[Any] = asyncio.ensure_future(reader.wake.wait())
                await asyncio.wait(
                    {woken, ending}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                )
                if not woken.done():
                    woken.cancel()
                    if not ending.done():
                        reader.write(sse.HEARTBEAT)
            if reader.cut == SLOW:
                logger.warning("cut an SSE reader: past its backlog bound")
                self.metrics.disconnects.labels("slow_client").inc()
                if request.transport is not None:
                    request.transport.abort()
                return response
            if ending.done():
                self.metrics.disconnects.labels("drain").inc()
                with contextlib.suppress(ConnectionError):
                    await response.write(reader.take() + sse.retry(random.randint(*RETRY_MS)))
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass  # the reader went away; it resumes with its last id
        finally:
            ending.cancel()
        return response

    async def _write(
        self,
        response: web.StreamResponse,
        data: bytes,
        reader: StreamReader,
        ending: asyncio.Future[Any],
    ) -> bool:
        """Write, unless the reader is cut or the drain starts while the write waits for
        the network (a reader that stopped reading); False: the stream ends."""
        write: asyncio.Future[Any] = asyncio.ensure_future(response.write(data))
        cut: asyncio.Future[Any] = asyncio.ensure_future(reader.ended.wait())
        try:
            await asyncio.wait({write, cut, ending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
        if write.done():
            write.result()  # a ConnectionError ends the stream
            return True
        write.cancel()  # stuck behind a reader that does not read: cut it
        reader.cut = reader.cut or SLOW
        return False


def _error(
    status: int,
    code: str,
    message: str,
    fields: dict[str, list[str]] | None = None,
    *,
    retry: bool = False,
) -> web.Response:
    return web.json_response(
        errors.error_body(code, message, fields),
        status=status,
        headers={"Retry-After": "1"} if retry else None,
    )
