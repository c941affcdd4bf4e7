"""`GET /api/v1/topics?prefix=&limit=&cursor=`: the topic directory, for pickers and
operators: the topics that had an event within REALTIME_DIRECTORY_IDLE_S, in name order,
each with its last event id and ts, its recent rate (events/s) and its viewers.

Only the topics the caller's token may subscribe to are listed (the `subscribe` rule,
`Authorization: Bearer <JWT>`). `limit` up to 1,000 a page (default 100); `next` is an
opaque cursor for the page after. A page's work is bounded: when a token may see few of
many topics, a page can hold fewer than `limit` topics and still have a `next`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from realtime.core import errors, jsoncodec
from realtime.core.directory import CursorError, decode_cursor, encode_cursor
from realtime.delivery.directory import DirectoryReader, Listed
from realtime.web.auth import OPEN, AuthError, Grant, TokenVerifier
from realtime.web.topic_events import QueryError, bearer_token, json_error, page_limit

logger = logging.getLogger(__name__)

TOPICS_PATH = "/api/v1/topics"
PARAMETERS = frozenset({"prefix", "limit", "cursor"})
# The start of a topic name (realtime/core/topics.py), or nothing.
PREFIX_RE = re.compile(r"(?:[a-z0-9][a-z0-9_.:-]{0,127})?")  # fullmatch: `$` takes a "\n"


@dataclass(frozen=True)
class DirectoryQuery:
    prefix: str
    limit: int
    after: str | None  # from the cursor: the page goes on after this topic


def parse_query(query: Mapping[str, str]) -> DirectoryQuery:
    """The query string as a page request (pure); QueryError names every bad parameter."""
    problems: dict[str, list[str]] = {}
    for name in sorted(set(query) - PARAMETERS):
        problems[name] = ["Unknown parameter."]
    prefix = query.get("prefix", "")
    if not PREFIX_RE.fullmatch(prefix):
        problems["prefix"] = ["Must be the start of a topic name (a-z 0-9 and _ . : -)."]
    limit = page_limit(query, problems)
    after = None
    if "cursor" in query:
        try:
            after = decode_cursor(query["cursor"])
        except CursorError:
            problems["cursor"] = ["Not a cursor this server gave."]
    if problems:
        raise QueryError(problems)
    return DirectoryQuery(prefix, limit, after)


# Viewers per topic, where known: the web process passes presence's counts
# (`realtime.delivery.presence.Presence.counts`, one round trip for the page).
Viewers = Callable[[list[str]], Awaitable[Mapping[str, int]]]


async def no_viewers(topics: list[str]) -> Mapping[str, int]:
    """Nothing known: every topic answers `viewers: null`."""
    return {}


def listing(page: list[Listed], viewers: Mapping[str, int]) -> list[dict[str, Any]]:
    return [
        {
            "topic": item.topic,
            "last_id": item.last_id,
            "last_ts": item.last_ts,
            "rate": item.rate,
            "viewers": viewers.get(item.topic),
        }
        for item in page
    ]


class TopicDirectory:
    """The handler: the `subscribe` token rule, then one bounded page of the directory."""

    def __init__(
        self,
        directory: DirectoryReader,
        verifier: TokenVerifier | None,
        viewers: Viewers = no_viewers,
    ) -> None:
        self.directory = directory
        self.verifier = verifier
        self.viewers = viewers

    async def handle(self, request: web.Request) -> web.Response:
        grant: Grant = OPEN
        if self.verifier is not None:
            try:
                grant = self.verifier.verify({"token": bearer_token(request)})
            except AuthError as exc:
                return json_error(401, errors.UNAUTHORIZED, str(exc))
        try:
            query = parse_query(request.query)
        except QueryError as exc:
            return json_error(400, errors.INVALID, str(exc), exc.fields)
        try:
            page = await self.directory.page(query.prefix, query.after, query.limit, grant.allows)
            viewers = await self.viewers([item.topic for item in page.topics])
        except (RedisError, OSError) as exc:
            logger.warning("topic directory unavailable (%s)", exc)
            return json_error(503, errors.UNAVAILABLE, "The topic directory cannot be read now.")
        body = {
            "topics": listing(page.topics, viewers),
            "next": None if page.after is None else encode_cursor(page.after),
        }
        return web.json_response(body, dumps=jsoncodec.dumps)
