"""Socket.IO namespace `/`: clients subscribe to topics; a topic is a room.

Client to server: `subscribe {topic, since?, snapshot?, max_rate?, presence?}` and
`unsubscribe {topic}`, each acknowledged with `{"ok": true, "topic", ...}` or `{"ok":
false, "error": {"code", "message", "fields"?}}`. Server to client: `update`, a list of
topic events; after a subscribe, its ack comes first, then the replay, then live events
(`realtime.delivery.hub`); with `presence: true`, `presence` events too.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

import socketio
from marshmallow import Schema, ValidationError

from realtime.core import errors
from realtime.core.keys import NAMESPACE
from realtime.core.settings import Settings
from realtime.core.streamids import StreamIdError, parse_id
from realtime.delivery.hub import Delivery, HistoryUnavailable
from realtime.ingest.schemas import SubscribeSchema, UnsubscribeSchema, field_errors
from realtime.web.access import Access

logger = logging.getLogger(__name__)


class _Refused(Exception):
    def __init__(self, ack: dict[str, Any]) -> None:
        self.ack = ack


def _single_payload(schema: Schema, args: tuple[Any, ...]) -> dict[str, Any]:
    """Validate the one argument an event carries; raises ValidationError."""
    if len(args) != 1:
        raise ValidationError({"_schema": ["Send exactly one object argument."]})
    loaded: dict[str, Any] = schema.load(args[0])
    return loaded


async def _always_answered(
    event: str, handling: Coroutine[Any, Any, dict[str, Any]]
) -> dict[str, Any]:
    """Every request gets an ack: a failure of ours becomes `internal` (logged with its
    traceback: it is a bug, not the client's mistake), never a missing answer."""
    try:
        return await handling
    except Exception:
        logger.exception("%s failed", event)
        return errors.error_ack(errors.INTERNAL, f"The {event} failed on the server; retry.")


class TopicNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, settings: Settings, delivery: Delivery, access: Access) -> None:
        super().__init__(NAMESPACE)
        self.settings = settings
        self.delivery = delivery
        self.access = access
        self._subscribe = SubscribeSchema()
        self._unsubscribe = UnsubscribeSchema()

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if not hasattr(self, f"on_{event}"):
            # Answered (when the client asked for an ack), never dispatched.
            return errors.error_ack(errors.INVALID, f"Unknown event {event[:64]!r}.")
        return await super().trigger_event(event, *args)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        self.access.connect(sid, auth)  # raises ConnectionRefusedError
        return True

    async def on_subscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        return await _always_answered("subscribe", self._on_subscribe(sid, *args))

    async def on_unsubscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        return await _always_answered("unsubscribe", self._on_unsubscribe(sid, *args))

    def _request(
        self, sid: str, event: str, schema: Schema, args: tuple[Any, ...]
    ) -> dict[str, Any]:
        """A request within the connection's rate, validated; `_Refused` with the error
        ack otherwise."""
        limited = self.access.check_rate(sid, event)
        if limited is not None:
            raise _Refused(limited)
        try:
            return _single_payload(schema, args)
        except ValidationError as exc:
            ack = errors.error_ack(errors.INVALID, f"Invalid {event} request.", field_errors(exc))
            raise _Refused(ack) from None

    async def _on_subscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            request = self._request(sid, "subscribe", self._subscribe, args)
        except _Refused as answer:
            return answer.ack
        topic = request["topic"]
        # Before anything is joined or read: a refused subscribe replays nothing.
        refused = self.access.check_subscribe(sid, topic, self.delivery.subs.topics(sid))
        if refused is not None:
            return refused
        try:
            since = parse_id(request["since"]) if "since" in request else None
        except StreamIdError as exc:  # the schema refuses these already
            return errors.error_ack(
                errors.INVALID, "Invalid subscribe request.", {"since": [str(exc)]}
            )
        grant = self.access.grant(sid)
        try:
            return await self.delivery.subscribe(
                sid,
                topic,
                since,
                request.get("snapshot"),
                request.get("max_rate"),
                presence=request.get("presence", False),
                sub=grant.sub if grant is not None else None,
                members=grant is not None and grant.members,
            )
        except HistoryUnavailable:
            return errors.error_ack(
                errors.UNAVAILABLE, "History is unavailable; subscribe again shortly."
            )

    async def _on_unsubscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            request = self._request(sid, "unsubscribe", self._unsubscribe, args)
        except _Refused as answer:
            return answer.ack
        topic = request["topic"]
        await self.delivery.unsubscribe(sid, topic)
        return {"ok": True, "topic": topic}

    async def on_disconnect(self, sid: str, *reason: Any) -> None:
        self.access.disconnected(sid)
        self.delivery.disconnected(sid)
