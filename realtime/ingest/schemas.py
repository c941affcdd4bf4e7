"""Validation at the edges: ingest events (HTTP) and subscription requests (Socket.IO).

Pure marshmallow schemas; errors name the fields, never carry a traceback.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from realtime.core.streamids import STREAM_ID_PATTERN, is_stream_id
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


# The deepest `data` ingest accepts (the object itself is level 1). The worker wraps
# `data` in a few levels more (the fan-out message, the `update` list) and orjson encodes
# at most 254: deeper data would be accepted here and then fail in the worker every time.
MAX_DATA_DEPTH = 200
# Integers the encoders keep exact (orjson: i64 and u64); larger ones would be stored as
# floats, so they are refused rather than silently changed.
MIN_INTEGER = -(2**63)
MAX_INTEGER = 2**64 - 1


def data_problem(value: Any) -> str | None:
    """Why the worker could not store `value` exactly (too deep, an integer out of
    range), else None. Iterative: the depth is what is being checked."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DATA_DEPTH:
                return f"Nested deeper than {MAX_DATA_DEPTH} levels."
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, int) and not MIN_INTEGER <= item <= MAX_INTEGER:
            return f"Integers must lie in [{MIN_INTEGER}, {MAX_INTEGER}] (64 bits)."
    return None


def storable(value: Any) -> None:
    """`data`'s validator: a JSON object the pipeline can encode and store exactly."""
    problem = data_problem(value)
    if problem is not None:
        raise ValidationError(problem)


class FullMatch(validate.Validator):
    """marshmallow's Regexp, but with `re.fullmatch` and ASCII classes: Regexp's
    `re.match` lets `...$` accept a trailing newline ("metrics.cpu\n")."""

    def __init__(self, regex: str, error: str) -> None:
        self.regex = re.compile(regex, re.ASCII)
        self.error = error
        self.message = error

    def _refuse(self, value: Any) -> ValidationError:
        return ValidationError(self.message.format(input=value, regex=self.regex.pattern))

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or self.regex.fullmatch(value) is None:
            raise self._refuse(value)
        return value


class StreamIdValidator(FullMatch):
    """The stream-id grammar, and both parts within 64 bits (as Redis holds them)."""

    def __call__(self, value: Any) -> Any:
        if not is_stream_id(super().__call__(value)):
            raise self._refuse(value)
        return value


def topic_field(**kwargs: Any) -> fields.String:
    return fields.String(validate=FullMatch(TOPIC_PATTERN, error=TOPIC_MESSAGE), **kwargs)


class EventSchema(Schema):
    """One event a producer posts: `{topic, data, ts?, key?}`."""

    class Meta:
        unknown = RAISE

    topic = topic_field(required=True)
    data = fields.Dict(keys=fields.String(), required=True, validate=storable)
    ts = StrictInteger(validate=validate.Range(min=0, max=2**53))
    key = fields.String(validate=validate.Length(min=1, max=256))


MAX_SNAPSHOT = 1000
MAX_TIME_MS = 2**53  # epoch ms, as `ts`
RESOLUTIONS = ("auto",)
MIN_POINTS = 10
MAX_POINTS = 10_000


class SubscribeSchema(Schema):
    """`subscribe {topic, since?, snapshot?, max_rate?, from?, resolution?, points?,
    presence?}` from a Socket.IO client."""

    class Meta:
        unknown = RAISE

    topic = topic_field(required=True)
    # The id of the last event the client has: replay what came after it.
    since = fields.String(
        validate=StreamIdValidator(
            STREAM_ID_PATTERN, error="An event id such as 1700000000000-0, as received."
        )
    )
    # How many of the newest events to put in the ack.
    snapshot = StrictInteger(validate=validate.Range(min=0, max=MAX_SNAPSHOT))
    # At most this many `update`s per second for this topic, each merging what the client
    # did not get on its own (realtime/delivery/conflate.py).
    max_rate = StrictNumber(validate=validate.Range(min=MIN_RATE_HZ, max=MAX_RATE_HZ))
    # Send `presence` events (the topic's viewer count) too (realtime/delivery/presence.py).
    presence = fields.Boolean(truthy={True}, falsy={False})
    # Replay everything history holds from this time (epoch ms), then go on live.
    from_ = StrictInteger(data_key="from", validate=validate.Range(min=0, max=MAX_TIME_MS))
    # "auto": serve the topic's tier that draws the range from `from` in about `points`.
    resolution = fields.String(validate=validate.OneOf(RESOLUTIONS))
    points = StrictInteger(validate=validate.Range(min=MIN_POINTS, max=MAX_POINTS))

    @validates_schema
    def _time_range(self, data: dict[str, Any], **kwargs: Any) -> None:
        """`from` replaces `since` (a position by time or by event), so not both;
        `resolution` needs the range's start, `points` the resolution it sizes."""
        if "from_" in data and "since" in data:
            raise ValidationError("Use since or from, not both.", field_name="from")
        if "resolution" in data and "from_" not in data:
            raise ValidationError("Needs from: the start of the range.", field_name="resolution")
        if "points" in data and "resolution" not in data:
            raise ValidationError('Only with resolution: "auto".', field_name="points")


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
