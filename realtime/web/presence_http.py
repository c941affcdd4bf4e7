"""`GET /api/v1/topics/{topic}/presence`: a topic's viewer count across all instances,
`{"topic", "count"}` (realtime/delivery/presence.py).

Auth: when Socket.IO connections need a token, a JWT that may subscribe to the topic
(`Authorization: Bearer <JWT>`, the same rule as `subscribe`) or a publish key of
`REALTIME_INGEST_KEYS` that may publish to it; open when subscribing is open.
"""

from __future__ import annotations

from aiohttp import web
from redis.exceptions import RedisError

from realtime.core import errors, jsoncodec
from realtime.core.topics import is_valid_topic
from realtime.delivery.presence import Presence
from realtime.ingest.publish_keys import IngestKeys, Unauthorized
from realtime.web.auth import AuthError, TokenVerifier
from realtime.web.topic_events import bearer_token

PRESENCE_PATH = "/api/v1/topics/{topic}/presence"


class TopicPresence:
    def __init__(
        self, presence: Presence, verifier: TokenVerifier | None, keys: IngestKeys | None
    ) -> None:
        self.presence = presence
        self.verifier = verifier
        self.keys = keys

    def refused(self, request: web.Request, topic: str) -> web.Response | None:
        """None if the caller may read the topic's count; the error response otherwise."""
        if self.verifier is None:
            return None
        try:
            grant = self.verifier.verify({"token": bearer_token(request)})
        except AuthError as exc:
            if self.keys is None:
                return _error(401, errors.UNAUTHORIZED, str(exc))
            try:  # not a token this server accepts: perhaps a publish key
                key = self.keys.authenticate(request.headers.get("Authorization"))
            except Unauthorized:
                return _error(401, errors.UNAUTHORIZED, f"{exc} (or send a publish key)")
            allowed = key.allows(topic)
        else:
            allowed = grant.allows(topic)
        if not allowed:
            return _error(403, errors.FORBIDDEN, f"Not allowed to read {topic}.")
        return None

    async def handle(self, request: web.Request) -> web.Response:
        topic = request.match_info["topic"]
        refused = self.refused(request, topic)
        if refused is not None:
            return refused
        if not is_valid_topic(topic):
            return _error(400, errors.INVALID, "Invalid topic.", {"topic": ["Not a topic."]})
        try:
            count = await self.presence.count(topic)
        except (RedisError, OSError):
            return _error(503, errors.UNAVAILABLE, "Presence is unavailable; retry shortly.")
        return web.json_response({"topic": topic, "count": count}, dumps=jsoncodec.dumps)


def _error(
    status: int, code: str, message: str, fields: dict[str, list[str]] | None = None
) -> web.Response:
    return web.json_response(errors.error_body(code, message, fields), status=status)
