"""The Server-Sent Events wire format of `GET /api/v1/stream` (step 5, sending, for SSE
readers): the messages and the stream position carried in each `id:`.

A position names every topic of the stream with the last event id delivered on it:
`topic=id` pairs joined by `,`, e.g. `metrics.cpu=1700000000000-0,metrics.mem=1700000000001-3`.
Topic names never hold `=`, `,` or a line break, so the plain text is unambiguous, small
and readable in curl; a browser's `EventSource` sends it back as `Last-Event-ID`.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from realtime.core.streamids import StreamId, StreamIdError, format_id, parse_id
from realtime.core.topics import is_valid_topic

UPDATE = "update"
GAP = "gap"
RANGE = "range"  # a topic replayed from a time (`from`): where its replay starts
HEARTBEAT = b": ping\n\n"


class PositionError(ValueError):
    """A `Last-Event-ID` this server did not give."""


def encode_position(cursors: Mapping[str, StreamId]) -> str:
    """`{topic: last id}` as one `id:` value, topics in name order."""
    return ",".join(f"{topic}={format_id(cursors[topic])}" for topic in sorted(cursors))


def decode_position(text: str) -> dict[str, StreamId]:
    """An `id:` value back to `{topic: last id}`; PositionError if it is not one."""
    cursors: dict[str, StreamId] = {}
    if not text.strip():
        return cursors
    for pair in text.strip().split(","):
        topic, sep, event_id = pair.partition("=")
        if not sep or not is_valid_topic(topic) or topic in cursors:
            raise PositionError(f"not a stream position: {text[:200]!r}")
        try:
            cursors[topic] = parse_id(event_id)
        except StreamIdError:
            raise PositionError(f"not a stream position: {text[:200]!r}") from None
    return cursors


def message(event: str, data: Any, position: str | None = None) -> bytes:
    """One SSE message: its `event:`, its `id:` (if any) and one line of JSON `data:`
    (orjson never writes a raw line break)."""
    head = f"event: {event}\n" + (f"id: {position}\n" if position is not None else "")
    return head.encode() + data_line(data)


def data_line(data: Any) -> bytes:
    """A message's last line and its end: made once per event for all its readers."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


def position_only(position: str) -> bytes:
    """A message with only an `id:`: no event fires, but `EventSource` takes it as its
    `lastEventId`, so a stream that saw no event yet still resumes from where it began."""
    return f"id: {position}\n\n".encode()


def retry(ms: int) -> bytes:
    """The reconnection delay hint; sent when the server ends the stream (drain)."""
    return f"retry: {ms}\n\n".encode()
