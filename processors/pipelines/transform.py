"""Pure transforms: an ingest stream entry becomes topic events. No I/O here.

The pass-through transform keeps the ingest entry id as the topic event id. A topic
always maps to one partition, whose stream ids increase, so the ids of a topic's events
increase too, and a redelivered entry maps to the id its first delivery wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from realtime.core.text import text
from realtime.core.topics import is_valid_topic


class TransformError(ValueError):
    """The entry can never be processed (malformed); retrying will not help."""


# Not frozen (nothing changes them): on the worker's per-event path a frozen dataclass
# cost three times as much to create (`python -m bench.worker`).
@dataclass(slots=True)
class IngestEvent:
    id: str
    topic: str
    ts: int
    data: dict[str, Any]
    # `data` as the entry holds it (JSON), when it can stand for `data` as is (see
    # `decode_entry`): history and fan-out write these bytes instead of encoding `data`
    # again. Empty: encode `data`.
    raw: bytes | str = field(default=b"", compare=False, repr=False)


@dataclass(slots=True)
class TopicEvent:
    topic: str
    id: str
    ts: int
    data: dict[str, Any]
    raw: bytes | str = field(default=b"", compare=False, repr=False)  # as IngestEvent's

    def to_wire(self) -> dict[str, Any]:
        """The event as clients receive it inside an `update` list."""
        return {"topic": self.topic, "id": self.id, "ts": self.ts, "data": self.data}


# A JSON value d levels deep is at least 2d bytes long, and has at least d brackets: data
# within either bound is at most 250 levels deep, as deep as the fan-out message (which
# nests it four levels down) can encode (tests/test_wire.py). Deeper data is encoded
# again, and fails as it always did.
RAW_MAX_BYTES = 500
RAW_MAX_DEPTH = 250

# Topics already found valid, by the bytes an entry holds (decoding and the regex are a
# measurable part of an event's cost); bounded, since topics come from producers.
_valid_topics: dict[bytes | str, str] = {}


def decode_entry(entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> IngestEvent:
    """An ingest stream entry as written by `realtime.ingest.api`; TransformError if malformed."""
    get = fields.get
    try:
        # Redis replies carry bytes keys; tests and callers may pass str keys.
        raw_topic = get(b"topic")
        if raw_topic is None:
            raw_topic = fields["topic"]
        topic = _valid_topics.get(raw_topic)
        if topic is None:
            name = raw_topic.decode() if type(raw_topic) is bytes else text(raw_topic)
        raw_ts = get(b"ts")
        ts = int(fields["ts"] if raw_ts is None else raw_ts)  # int() takes bytes and str
        raw = get(b"data")
        if raw is None:
            raw = fields["data"]
        data = orjson.loads(raw)
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise TransformError(f"malformed ingest entry: {exc!r}") from exc
    if topic is None:
        if not is_valid_topic(name):
            raise TransformError(f"invalid topic {name!r}")
        if len(_valid_topics) >= 65536:
            _valid_topics.clear()
        _valid_topics[raw_topic] = topic = name
    if type(data) is not dict:  # orjson makes dicts, never a subclass
        raise TransformError("data is not a JSON object")
    if len(raw) > RAW_MAX_BYTES and _brackets(raw) > RAW_MAX_DEPTH:
        raw = b""
    return IngestEvent(entry_id if type(entry_id) is str else text(entry_id), topic, ts, data, raw)


def _brackets(raw: bytes | str) -> int:
    if isinstance(raw, str):
        return raw.count("{") + raw.count("[")
    return raw.count(b"{") + raw.count(b"[")


def passthrough(event: IngestEvent) -> list[TopicEvent]:
    return [TopicEvent(event.topic, event.id, event.ts, event.data, event.raw)]


def group_by_topic(events: list[TopicEvent]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Wire payloads per topic, topics in first-seen order, events in their order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event.topic, []).append(event.to_wire())
    return list(grouped.items())
