"""An extension: the `annotate {topic, text}` event writes an annotation into a topic.

    REALTIME_EXTENSIONS=realtime.examples.annotate:setup realtime serve

A client that may read a topic (its token's `topics`) marks it, for instance "deploy
v42", and every subscriber of the topic gets the annotation as an `update` event, kept
in the topic's history like any other (`{"annotation": text, "by": sub}`). The ack is
`{"ok": true, "topic", "id"}` (the ingest id) or an error ack, as `subscribe`'s.
Walked through in docs/extensions.md.
"""

from __future__ import annotations

from typing import Any

import socketio
from aiohttp import web
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from realtime.ingest.schemas import topic_field
from realtime.web.extensions import CLAIMS, REALTIME, PublishError

MAX_TEXT = 500


class AnnotateSchema(Schema):
    class Meta:
        unknown = RAISE

    topic = topic_field(required=True)  # the topic rule of ingest and subscribe
    text = fields.String(required=True, validate=validate.Length(min=1, max=MAX_TEXT))


def _error(code: str, message: str, fields: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"ok": False, "error": error}


def setup(sio: socketio.AsyncServer, app: web.Application) -> None:
    realtime = app[REALTIME]
    schema = AnnotateSchema()

    async def annotate(sid: str, request: Any = None) -> dict[str, Any]:
        try:
            loaded = schema.load(request)
        except ValidationError as exc:
            return _error("invalid", "Invalid annotate request.", exc.messages)
        topic, text = loaded["topic"], loaded["text"]
        claims = (await sio.get_session(sid)).get(CLAIMS, {})
        if not realtime.allows(claims, topic):
            return _error("forbidden", f"The token does not allow {topic}.")
        try:
            ingest_id = await realtime.publish(topic, {"annotation": text, "by": claims.get("sub")})
        except PublishError as exc:
            return exc.ack()
        return {"ok": True, "topic": topic, "id": ingest_id}

    sio.on("annotate", annotate)
