"""Socket.IO namespace `/`: clients subscribe to topics; a topic is a room.

Client to server: `subscribe {topic}` and `unsubscribe {topic}`, each acknowledged with
`{"ok": true, "topic"}` or `{"ok": false, "error": {"code", "message", "fields"?}}`.
Server to client: `update`, a list of topic events (emitted by the fan-out manager).
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from marshmallow import Schema, ValidationError

from realtime import errors
from realtime.keys import NAMESPACE
from realtime.schemas import SubscribeSchema, UnsubscribeSchema, field_errors
from realtime.settings import Settings

logger = logging.getLogger(__name__)


def _single_payload(schema: Schema, args: tuple[Any, ...]) -> dict[str, Any]:
    """Validate the one argument an event carries; raises ValidationError."""
    if len(args) != 1:
        raise ValidationError({"_schema": ["Send exactly one object argument."]})
    loaded: dict[str, Any] = schema.load(args[0])
    return loaded


class TopicNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        super().__init__(NAMESPACE)
        self.settings = settings
        self._subscribe = SubscribeSchema()
        self._unsubscribe = UnsubscribeSchema()

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        return True

    async def on_subscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            request = _single_payload(self._subscribe, args)
        except ValidationError as exc:
            return errors.error_ack(errors.INVALID, "Invalid subscribe request.", field_errors(exc))
        topic = request["topic"]
        await self.enter_room(sid, topic)
        return {"ok": True, "topic": topic}

    async def on_unsubscribe(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            request = _single_payload(self._unsubscribe, args)
        except ValidationError as exc:
            return errors.error_ack(
                errors.INVALID, "Invalid unsubscribe request.", field_errors(exc)
            )
        topic = request["topic"]
        await self.leave_room(sid, topic)
        return {"ok": True, "topic": topic}
