"""Socket.IO namespace `/`: clients subscribe to topics; a topic is a room.

Client to server: `subscribe {topic, since?, snapshot?, max_rate?, from?, resolution?,
points?, presence?}` and `unsubscribe {topic}`, each acknowledged with `{"ok": true,
"topic", ...}` or `{"ok": false, "error": {"code", "message", "fields"?}}`. Server to
client: `update`, a list of topic events; after a subscribe, its ack comes first, then the
replay, then live events (`realtime.delivery.hub`); with `presence: true`, `presence`
events too.

This handler sees every event of `/` first (`SocketServer.register_first`): the
connection's auth and limits, then the extensions' connect handlers (accepted clients
only), `subscribe`/`unsubscribe` always its own; any other event goes to the handlers
extensions registered (realtime/web/extensions.py), or is answered `invalid`.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

import socketio
from marshmallow import Schema, ValidationError

from processors.pipelines.config import PipelinesConfig
from processors.pipelines.retention import Retention
from realtime.core import errors
from realtime.core.keys import NAMESPACE, SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT
from realtime.core.settings import Settings
from realtime.core.streamids import StreamIdError, parse_id
from realtime.delivery.hub import Delivery, HistoryUnavailable
from realtime.ingest.fastcheck import plain_subscribe
from realtime.ingest.schemas import SubscribeSchema, UnsubscribeSchema, field_errors
from realtime.web.access import Access
from realtime.web.recovery import Recovery
from realtime.web.resolutions import Resolutions

logger = logging.getLogger(__name__)


class _Refused(Exception):
    def __init__(self, ack: dict[str, Any]) -> None:
        self.ack = ack


def _single_payload(schema: Schema, args: tuple[Any, ...]) -> dict[str, Any]:
    """Validate the one argument an event carries; raises ValidationError."""
    if len(args) != 1:
        raise ValidationError({"_schema": ["Send exactly one object argument."]})
    if isinstance(schema, SubscribeSchema):
        plain = plain_subscribe(args[0])  # the common request, without marshmallow
        if plain is not None:
            return plain
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
    def __init__(
        self,
        settings: Settings,
        delivery: Delivery,
        access: Access,
        resolutions: Resolutions | None = None,
        recovery: Recovery | None = None,
    ) -> None:
        super().__init__(NAMESPACE)
        self.resolutions = resolutions or Resolutions(PipelinesConfig(()), Retention())
        self.settings = settings
        self.delivery = delivery
        self.access = access
        self.recovery = recovery
        self._subscribe = SubscribeSchema()
        self._unsubscribe = UnsubscribeSchema()
        # Set by realtime/web/extensions.py when extensions are installed: the token's
        # claims go into the connection's session for their handlers.
        self.extended = False

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event == SUBSCRIBE_EVENT:
            return await self.on_subscribe(*args)
        if event == UNSUBSCRIBE_EVENT:
            return await self.on_unsubscribe(*args)
        if event == "connect":
            return await self.on_connect(*args)
        if event == "disconnect":
            await self.on_disconnect(*args)
            return await self.server.handlers_event(event, NAMESPACE, *args)
        limited = self.access.check_event(args[0], NAMESPACE, event) if args else None
        if limited is not None:
            return limited  # the ack, if the client asked for one; nothing is handled
        try:
            result = await self.server.handlers_event(event, NAMESPACE, *args)
        except Exception:  # an extension's bug: the client still gets its answer
            logger.exception("extension handler of %r failed", event[:64])
            return errors.error_ack(errors.INTERNAL, "The event failed on the server.")
        if result is self.server.not_handled:
            # Answered (when the client asked for an ack), never dispatched.
            return errors.error_ack(errors.INVALID, f"Unknown event {event[:64]!r}.")
        return result

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        self.access.connect(sid, auth)  # raises ConnectionRefusedError
        try:
            if self.extended:
                grant = self.access.grant(sid)
                claims = dict(grant.claims) if grant is not None else {}
                await self.server.save_session(sid, {"claims": claims}, NAMESPACE)
            accepted = await self.server.handlers_connect(NAMESPACE, sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError:
            self.access.disconnected(sid)  # refused by an extension: no disconnect follows
            raise
        except BaseException as exc:
            self.access.disconnected(sid)
            if not isinstance(exc, Exception):
                raise
            # An extension's bug: a refusal the client sees, not a CONNECT never answered.
            logger.exception("extension connect handler failed")
            raise socketio.exceptions.ConnectionRefusedError(
                "The server failed to accept the connection; retry.", {"code": errors.INTERNAL}
            ) from None
        if accepted is False:
            self.access.disconnected(sid)
            return False
        if self.recovery is not None:
            await self.recovery.connect(sid, auth)
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
        resolution = None
        if "resolution" in request:  # the tier that draws the range (resolutions.py)
            topic, resolution = self.resolutions.served(
                topic, request["from_"], request.get("points")
            )
        # Before anything is joined or read: a refused subscribe replays nothing.
        for asked in dict.fromkeys((request["topic"], topic)):
            refused = self.access.check_subscribe(sid, asked, self.delivery.subs.topics(sid))
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
            ack = await self.delivery.subscribe(
                sid,
                topic,
                since,
                request.get("snapshot"),
                request.get("max_rate"),
                start=request.get("from_"),
                presence=request.get("presence", False),
                sub=grant.sub if grant is not None else None,
                members=grant is not None and grant.members,
            )
        except HistoryUnavailable:
            return errors.error_ack(
                errors.UNAVAILABLE, "History is unavailable; subscribe again shortly."
            )
        if resolution is not None:
            ack["resolution"] = resolution
        return ack

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
        if self.recovery is not None:
            self.recovery.disconnected(sid)
