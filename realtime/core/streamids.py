"""Redis stream ids (`"<ms>-<seq>"`): event ids, ingest ids and `since` positions.

Ids order as the pair (ms, seq) of integers, never as strings ("9-0" < "10-0").
"""

from __future__ import annotations

import functools
import re

StreamId = tuple[int, int]

# ASCII digits only (`\d` also matches other scripts' digits, which int() reads), and
# used with fullmatch (`$` also matches before a trailing newline).
STREAM_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"
_STREAM_ID_RE = re.compile(STREAM_ID_PATTERN, re.ASCII)
_MAX_PART = 2**64 - 1
MAX_ID_PART = _MAX_PART  # each part of a stream id is an unsigned 64-bit integer

ZERO: StreamId = (0, 0)


class StreamIdError(ValueError):
    pass


def parse_id(value: str | bytes) -> StreamId:
    """`"1700000000000-3"` -> `(1700000000000, 3)`; StreamIdError if it is not one."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return _parsed(text)


# Remembered: the web parses the same ids again and again (each event of a history page
# for each connection it replays to, in a reconnect storm), ~1 us each, ~0.14 remembered.
# Not remembered: what raises.
@functools.lru_cache(maxsize=8192)
def _parsed(text: str) -> StreamId:
    if not _STREAM_ID_RE.fullmatch(text):
        raise StreamIdError(f"not a stream id: {text!r}")
    ms, seq = text.split("-")
    parsed = int(ms), int(seq)
    if parsed[0] > _MAX_PART or parsed[1] > _MAX_PART:
        raise StreamIdError(f"stream id out of range: {text!r}")
    return parsed


def is_stream_id(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_id(value)
    except StreamIdError:
        return False
    return True


def format_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def before(position: StreamId) -> StreamId:
    """The greatest stream id below `position` (ZERO stays ZERO's floor: 0-0 has none)."""
    ms, seq = position
    if seq > 0:
        return (ms, seq - 1)
    return (ms - 1, _MAX_PART) if ms > 0 else ZERO
