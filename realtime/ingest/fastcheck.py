"""The ingest hot path's validation: accepts exactly the events `EventSchema` accepts and
`data_problem` / `_big_integers` pass, without building marshmallow's intermediate
objects (profiled: marshmallow was about a third of the web's CPU per event).

It only ever says "valid" or "ask marshmallow": anything it is not sure of (an error,
an unusual type, data that might hold an integer orjson rounded) goes to the schema,
which stays the reference and produces every error message. So errors are the schema's
by construction; what must hold, and tests/test_fastcheck.py checks against the schema
on generated input, is that whatever this accepts the schema accepts, unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from realtime.core.streamids import is_stream_id
from realtime.core.topics import TOPIC_PATTERN
from realtime.ingest.schemas import MAX_DATA_DEPTH, MAX_INTEGER, MAX_SNAPSHOT, MIN_INTEGER

_FIELDS = frozenset(("topic", "data", "ts", "key"))
_topic_match = re.compile(TOPIC_PATTERN, re.ASCII).fullmatch
MAX_TS = 2**53
# An integral float this large may be an integer beyond 64 bits that orjson rounded.
_SUSPECT_FLOAT = float(2**63)


def _clean(value: dict[str, Any] | list[Any], depth: int) -> bool:
    """True when `value` (at `depth`, the data object being 1) is no deeper than the
    limit and holds no integer out of range and no float that may have been one."""
    if depth > MAX_DATA_DEPTH:
        return False
    children: Iterable[Any] = value.values() if type(value) is dict else value
    for item in children:
        kind: type = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is float:
            if -_SUSPECT_FLOAT < item < _SUSPECT_FLOAT:
                continue
            if item.is_integer():
                return False
        elif kind is int:
            if not MIN_INTEGER <= item <= MAX_INTEGER:
                return False
        elif kind is dict or kind is list:
            if not _clean(item, depth + 1):
                return False
        else:  # not something orjson decodes to: let the schema judge
            return False
    return True


def valid_events(items: list[Any]) -> list[dict[str, Any]] | None:
    """`items` when every one is an event the schema would load unchanged (a `dict` with
    only its fields, each of the right type and range, and clean data), else None."""
    for item in items:
        if type(item) is not dict or not _FIELDS.issuperset(item):
            return None
        topic = item.get("topic")
        data = item.get("data")
        if type(topic) is not str or _topic_match(topic) is None or type(data) is not dict:
            return None
        if len(item) > 2:
            if "ts" in item:
                ts = item["ts"]
                if type(ts) is not int or not 0 <= ts <= MAX_TS:
                    return None
            if "key" in item:
                key = item["key"]
                if type(key) is not str or not 1 <= len(key) <= 256:
                    return None
        if data and not _clean(data, 1):
            return None
    return items


_SUBSCRIBE_FIELDS = frozenset(("topic", "since", "snapshot"))


def plain_subscribe(request: Any) -> dict[str, Any] | None:
    """A subscribe's request when it is `{topic, since?, snapshot?}`, each valid, as
    `SubscribeSchema` loads it (an equal dict); else None: the schema judges it. What
    every client's (re)connect sends: marshmallow took ~50 us of it."""
    if type(request) is not dict or not _SUBSCRIBE_FIELDS.issuperset(request):
        return None
    topic = request.get("topic")
    if type(topic) is not str or _topic_match(topic) is None:
        return None
    if "since" in request:
        since = request["since"]
        if type(since) is not str or not is_stream_id(since):
            return None
    if "snapshot" in request:
        snapshot = request["snapshot"]
        if type(snapshot) is not int or not 0 <= snapshot <= MAX_SNAPSHOT:
            return None
    return dict(request)
