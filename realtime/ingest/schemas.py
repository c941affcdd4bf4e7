"""Validation at the edges: ingest events (HTTP) and subscription requests (Socket.IO).

Pure marshmallow schemas; errors name the fields, never carry a traceback.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from realtime.core.streamids import STREAM_ID_PATTERN
from realtime.core.topics import MAX_RATE_HZ, MIN_RATE_HZ, TOPIC_PATTERN

# marshmallow formats this with {regex}; the pattern itself has braces, so it is not inlined.
TOPIC_MESSAGE = (
    "Topic names match {regex}: lowercase letters, digits, '_', '.', ':' and '-', "
    "starting with a letter or digit, at most 128 characters."
)


class StrictInteger(fields.Integer):
    """An integer that is a JSON integer: no booleans, strings or fractions."""

    def _validated(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return super()._validated(value)


class StrictNumber(fields.Float):
    """A JSON number: no booleans or strings."""

    def _validated(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._validated(value)


def topic_field(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Regexp(TOPIC_PATTERN, error=TOPIC_MESSAGE), **kwargs)


class EventSchema(Schema):
    """One event a producer posts: `{topic, data, ts?, key?}`."""

    class Meta:
        unknown = RAISE

    topic = topic_field(required=True)
    data = fields.Dict(keys=fields.String(), required=True)
    ts = StrictInteger(validate=validate.Range(min=0, max=2**53))
    key = fields.String(validate=validate.Length(min=1, max=256))


MAX_SNAPSHOT = 1000


class SubscribeSchema(Schema):
    """`subscribe {topic, since?, snapshot?, max_rate?}` from a Socket.IO client."""

    class Meta:
        unknown = RAISE

    topic = topic_field(required=True)
    # The id of the last event the client has: replay what came after it.
    since = fields.String(
        validate=validate.Regexp(
            STREAM_ID_PATTERN, error="An event id such as 1700000000000-0, as received."
        )
    )
    # How many of the newest events to put in the ack.
    snapshot = StrictInteger(validate=validate.Range(min=0, max=MAX_SNAPSHOT))
    # At most this many `update`s per second for this topic, each merging what the client
    # did not get on its own (realtime/delivery/conflate.py).
    max_rate = StrictNumber(validate=validate.Range(min=MIN_RATE_HZ, max=MAX_RATE_HZ))


class UnsubscribeSchema(Schema):
    """`unsubscribe {topic}` from a Socket.IO client."""

    class Meta:
        unknown = RAISE

    topic = topic_field(required=True)


def field_errors(error: ValidationError) -> dict[str, Any]:
    """marshmallow's messages with every key a string (batch indexes become "0", "1", ...)."""

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): norm(v) for k, v in value.items()}
        return value

    messages = error.messages
    if isinstance(messages, dict):
        return dict(norm(messages))
    return {"_schema": messages}
