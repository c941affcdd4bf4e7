"""`GET /api/v1/topics/{topic}/events`: a topic's history by time or id range, paged.

The reading side of history for charts that open on a past range (a dashboard opened at
9:00 draws the last hour, then goes live with `subscribe {since: <last id>}`). `from`
and `to` are epoch milliseconds or event ids, both inclusive; `order` is `asc` (default)
or `desc`; `limit` up to 1,000 a page; `next` is an opaque cursor for the next page.
A `from` older than what history retains answers what exists, with `complete: false`
and `retained_from`, the oldest event still held. Same access rule as `subscribe`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from realtime.core import b64url, errors, jsoncodec
from realtime.core.streamids import (
    MAX_ID_PART,
    ZERO,
    StreamId,
    StreamIdError,
    before,
    format_id,
    parse_id,
)
from realtime.core.topics import is_valid_topic
from realtime.delivery.history import HistoryReader, covers
from realtime.web.auth import AuthError, TokenVerifier

EVENTS_PATH = "/api/v1/topics/{topic}/events"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
ORDERS = ("asc", "desc")


class QueryError(ValueError):
    """The query string cannot be used; `fields` says which parameter and why."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("Invalid query.")
        self.fields = fields


@dataclass(frozen=True)
class RangeQuery:
    """A page request in stream-id terms: both bounds inclusive."""

    start: StreamId
    end: StreamId
    limit: int
    descending: bool
    since_start: bool  # `from` was given: `complete` says whether history reaches it


def position(text: str, *, upper: bool) -> StreamId:
    """An epoch-ms time or an event id as a stream position: a time covers every id of
    its millisecond (the lowest one as a lower bound, the highest as an upper)."""
    if "-" in text:
        return parse_id(text)
    if not text.isascii() or not text.isdigit():
        raise StreamIdError(f"not a time or an event id: {text!r}")
    ms = int(text)
    if ms > MAX_ID_PART:
        raise StreamIdError(f"time out of range: {text!r}")
    return (ms, MAX_ID_PART if upper else 0)


def encode_cursor(after: StreamId) -> str:
    return b64url.encode(format_id(after).encode())


def decode_cursor(text: str) -> StreamId:
    try:
        raw = b64url.decode(text)
        return parse_id(raw.decode("ascii"))
    except ValueError:  # base64's and UTF-8 errors are ValueErrors
        raise StreamIdError("not a cursor this server gave") from None


def parse_query(query: Mapping[str, str]) -> RangeQuery:
    """The query string as a page request; QueryError names every bad parameter."""
    problems: dict[str, list[str]] = {}
    unknown = sorted(set(query) - {"from", "to", "limit", "cursor", "order"})
    for name in unknown:
        problems[name] = ["Unknown parameter."]
    start, end = (0, 0), (MAX_ID_PART, MAX_ID_PART)
    for name, upper in (("from", False), ("to", True)):
        if name in query:
            try:
                bound = position(query[name], upper=upper)
            except StreamIdError:
                problems[name] = ["Must be a time in epoch milliseconds or an event id."]
            else:
                start, end = (start, bound) if upper else (bound, end)
    limit = page_limit(query, problems)
    order = query.get("order", "asc")
    if order not in ORDERS:
        problems["order"] = ["Must be asc or desc."]
    descending = order == "desc"
    if "cursor" in query:
        try:
            after = decode_cursor(query["cursor"])
        except StreamIdError:
            problems["cursor"] = ["Not a cursor this server gave."]
        else:  # the page goes on past the last event of the previous one
            if descending:
                end = min(end, before(after))
            else:
                start = max(start, _after(after))
    if problems:
        raise QueryError(problems)
    return RangeQuery(start, end, limit, descending, "from" in query)


def page_limit(query: Mapping[str, str], problems: dict[str, list[str]]) -> int:
    """A page's `limit` (1 to MAX_LIMIT, default DEFAULT_LIMIT); a bad one goes in `problems`."""
    raw = query.get("limit", "")
    if not raw:
        return DEFAULT_LIMIT
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT:
        return int(raw)
    problems["limit"] = [f"Must be a whole number from 1 to {MAX_LIMIT}."]
    return DEFAULT_LIMIT


def _after(position: StreamId) -> StreamId:
    ms, seq = position
    return (ms, seq + 1) if seq < MAX_ID_PART else (ms + 1, 0)


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class TopicEvents:
    """The handler: the same token rule as `subscribe`, then one XRANGE page."""

    def __init__(self, history: HistoryReader, verifier: TokenVerifier | None) -> None:
        self.history = history
        self.verifier = verifier

    async def handle(self, request: web.Request) -> web.Response:
        topic = request.match_info["topic"]
        if self.verifier is not None:
            try:
                grant = self.verifier.verify({"token": bearer_token(request)})
            except AuthError as exc:
                return json_error(401, errors.UNAUTHORIZED, str(exc))
            if not grant.allows(topic):
                return json_error(403, errors.FORBIDDEN, f"This token may not read {topic}.")
        if not is_valid_topic(topic):
            return json_error(400, errors.INVALID, "Invalid topic.", {"topic": ["Not a topic."]})
        try:
            query = parse_query(request.query)
        except QueryError as exc:
            return json_error(400, errors.INVALID, str(exc), exc.fields)
        return web.json_response(await self.page(topic, query), dumps=jsoncodec.dumps)

    async def page(self, topic: str, query: RangeQuery) -> dict[str, Any]:
        events, extent = await self.history.range(
            topic, query.start, query.end, query.limit + 1, descending=query.descending
        )
        more = len(events) > query.limit
        events = events[: query.limit]
        oldest, maxlen = extent.oldest, self.history.maxlen
        return {
            "topic": topic,
            "events": events,
            "next": encode_cursor(parse_id(events[-1]["id"])) if more else None,
            # Every retained event from `from` on, or (no `from`) since the topic began.
            "complete": covers(extent, query.start if query.since_start else ZERO, maxlen),
            "retained_from": format_id(oldest) if oldest is not None else None,
        }


def json_error(
    status: int, code: str, message: str, fields: dict[str, Any] | None = None
) -> web.Response:
    return web.json_response(errors.error_body(code, message, fields), status=status)
