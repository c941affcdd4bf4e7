"""Pure transforms: an ingest stream entry becomes topic events. No I/O here.

The pass-through transform keeps the ingest entry id as the topic event id. A topic
always maps to one partition, whose stream ids increase, so the ids of a topic's events
increase too, and a redelivered entry maps to the id its first delivery wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from realtime.core import jsoncodec
from realtime.core.text import text
from realtime.core.topics import is_valid_topic


class TransformError(ValueError):
    """The entry can never be processed (malformed); retrying will not help."""


@dataclass(frozen=True, slots=True)
class IngestEvent:
    id: str
    topic: str
    ts: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TopicEvent:
    topic: str
    id: str
    ts: int
    data: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The event as clients receive it inside an `update` list."""
        return {"topic": self.topic, "id": self.id, "ts": self.ts, "data": self.data}


def _field(fields: Mapping[bytes | str, bytes | str], name: str) -> bytes | str:
    """Redis replies carry bytes keys; tests and callers may pass str keys."""
    value = fields.get(name.encode())
    return fields[name] if value is None else value


def decode_entry(entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> IngestEvent:
    """An ingest stream entry as written by `realtime.ingest.api`; TransformError if malformed."""
    try:
        topic = text(_field(fields, "topic"))
        ts = int(_field(fields, "ts"))  # int() takes bytes and str alike
        data = jsoncodec.loads(_field(fields, "data"))
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise TransformError(f"malformed ingest entry: {exc!r}") from exc
    if not is_valid_topic(topic):
        raise TransformError(f"invalid topic {topic!r}")
    if not isinstance(data, dict):
        raise TransformError("data is not a JSON object")
    return IngestEvent(id=text(entry_id), topic=topic, ts=ts, data=data)


def passthrough(event: IngestEvent) -> list[TopicEvent]:
    return [TopicEvent(topic=event.topic, id=event.id, ts=event.ts, data=event.data)]


def group_by_topic(events: list[TopicEvent]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Wire payloads per topic, topics in first-seen order, events in their order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event.topic, []).append(event.to_wire())
    return list(grouped.items())
