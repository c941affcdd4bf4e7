"""Pure transforms: an ingest stream entry becomes topic events. No I/O here.

The pass-through transform keeps the ingest entry id as the topic event id. A topic
always maps to one partition, whose stream ids increase, so the ids of a topic's events
increase too, and a redelivered entry maps to the id its first delivery wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(slots=True)
class TopicEvent:
    topic: str
    id: str
    ts: int
    data: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The event as clients receive it inside an `update` list."""
        return {"topic": self.topic, "id": self.id, "ts": self.ts, "data": self.data}


# Topics already found valid (the regex is a measurable part of an event's cost);
# bounded, since topics come from producers.
_valid_topics: set[str] = set()


def decode_entry(entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> IngestEvent:
    """An ingest stream entry as written by `realtime.ingest.api`; TransformError if malformed."""
    get = fields.get
    try:
        # Redis replies carry bytes keys; tests and callers may pass str keys.
        raw_topic = get(b"topic")
        if type(raw_topic) is bytes:
            topic = raw_topic.decode()
        else:
            topic = text(fields["topic"] if raw_topic is None else raw_topic)
        raw_ts = get(b"ts")
        ts = int(fields["ts"] if raw_ts is None else raw_ts)  # int() takes bytes and str
        raw_data = get(b"data")
        data = orjson.loads(fields["data"] if raw_data is None else raw_data)
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise TransformError(f"malformed ingest entry: {exc!r}") from exc
    if topic not in _valid_topics:
        if not is_valid_topic(topic):
            raise TransformError(f"invalid topic {topic!r}")
        if len(_valid_topics) >= 65536:
            _valid_topics.clear()
        _valid_topics.add(topic)
    if not isinstance(data, dict):
        raise TransformError("data is not a JSON object")
    return IngestEvent(entry_id if type(entry_id) is str else text(entry_id), topic, ts, data)


def passthrough(event: IngestEvent) -> list[TopicEvent]:
    return [TopicEvent(topic=event.topic, id=event.id, ts=event.ts, data=event.data)]


def group_by_topic(events: list[TopicEvent]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Wire payloads per topic, topics in first-seen order, events in their order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event.topic, []).append(event.to_wire())
    return list(grouped.items())
