"""`GET /api/v1/topics/{topic}/presence`: a topic's viewer count across all instances,
`{"topic", "count"}` (realtime/delivery/presence.py).

Auth: when Socket.IO connections need a token, a JWT that may subscribe to the topic
(`Authorization: Bearer <JWT>`, the same rule as `subscribe`) or a publish key of
`REALTIME_INGEST_KEYS` that may publish to it, checked by ingest's own check, so that
failed keys are throttled as at `POST /api/v1/events`; open when subscribing is open.
`?members=1` adds who watches (`members`: their tokens' `sub`s, sorted, at most 100;
`more_members`): for a token with the claim `presence_members: true`, or a publish key.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from realtime.core import errors, jsoncodec
from realtime.core.topics import is_valid_topic
from realtime.delivery.presence import Presence
from realtime.ingest.api import IngestHandler
from realtime.web.auth import AuthError, TokenVerifier
from realtime.web.topic_events import bearer_token

PRESENCE_PATH = "/api/v1/topics/{topic}/presence"


class TopicPresence:
    def __init__(
        self, presence: Presence, verifier: TokenVerifier | None, ingest: IngestHandler
    ) -> None:
        self.presence = presence
        self.verifier = verifier
        self.ingest = ingest  # its publish key check

    async def access(self, request: web.Request, topic: str) -> web.Response | bool:
        """Whether the caller may see the topic's members, if it may read its count;
        the error response otherwise."""
        if self.verifier is None:
            return True
        token = bearer_token(request)
        if self.ingest.keys is not None and token.count(".") != 2:  # not shaped as a JWT
            refusal, key = await self.ingest.publisher(request)
            if refusal is not None:
                return refusal
            allowed, members = key is not None and key.allows(topic), True
        else:
            try:
                grant = self.verifier.verify({"token": token})
            except AuthError as exc:
                return _error(401, errors.UNAUTHORIZED, str(exc))
            allowed, members = grant.allows(topic), grant.members
        if not allowed:
            return _error(403, errors.FORBIDDEN, f"Not allowed to read {topic}.")
        return members

    async def handle(self, request: web.Request) -> web.Response:
        topic = request.match_info["topic"]
        members = await self.access(request, topic)
        if isinstance(members, web.Response):
            return members
        if not is_valid_topic(topic):
            return _error(400, errors.INVALID, "Invalid topic.", {"topic": ["Not a topic."]})
        wanted = request.query.get("members", "0")
        if wanted not in ("0", "1"):
            return _error(400, errors.INVALID, "Invalid query.", {"members": ["Must be 0 or 1."]})
        if wanted == "1" and not members:
            message = f"This token may not see who watches {topic} (claim presence_members)."
            return _error(403, errors.FORBIDDEN, message)
        body: dict[str, Any] = {"topic": topic}
        try:
            body["count"] = await self.presence.count(topic)
            if wanted == "1":
                body["members"], body["more_members"] = await self.presence.member_list(topic)
        except (RedisError, OSError):
            return _error(503, errors.UNAVAILABLE, "Presence is unavailable; retry shortly.")
        return web.json_response(body, dumps=jsoncodec.dumps)


def _error(
    status: int, code: str, message: str, fields: dict[str, list[str]] | None = None
) -> web.Response:
    return web.json_response(errors.error_body(code, message, fields), status=status)
