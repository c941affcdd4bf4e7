"""The one fan-out encoder: a topic's `update` emit as python-socketio's Redis manager
puts it on the wire between processes. The worker publishes these inside its atomic
commit; the web's `FanoutManager` encodes with it too. A web instance reads the keys
before `data` alone (`split_update`) and passes the events on undecoded; the stock
manager, and older web instances, decode it whole (extra keys such as `ids` and
`sent_at` are ignored there).

Pure: no I/O.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from realtime.core.keys import NAMESPACE, UPDATE_EVENT, Keys
from realtime.core.settings import Settings

Updates = Sequence[tuple[str, list[dict[str, Any]]]]  # (topic, events) per `update`


class UpdatesEncoder(Protocol):
    def encode_updates(self, batches: Updates) -> list[tuple[str, bytes]]: ...


def update_message(topic: str, events: list[dict[str, Any]], host_id: str) -> dict[str, Any]:
    """The stock manager's emit message, as `AsyncPubSubManager.emit` builds it, with two
    keys of ours (the stock manager ignores extra keys): `ids`, the events' ids as
    integers, (ms, seq) after (ms, seq), when each is a canonical stream id; and
    `sent_at`. The keys a web instance routes by come before `data`, so that it can
    read them without decoding the events (`split_update`)."""
    message: dict[str, Any] = {"method": "emit", "event": UPDATE_EVENT, "room": topic}
    ids = flat_ids(events)
    if ids is not None:
        message["ids"] = [int(part) for part in ids.split(",")]
    # When it was published (the commit follows at once): for the fan-out latency metric.
    message["sent_at"] = time.time()
    message.update(
        host_id=host_id,
        data=[events],
        binary=False,
        namespace=NAMESPACE,
        skip_sid=None,
        callback=None,
    )
    return message


# A canonical stream id whose parts fit JSON integers of 64 bits (no leading zero, at
# most 19 digits); any other id leaves `ids` out, and the message is decoded whole.
_CANONICAL_ID = re.compile(r"(?:0|[1-9][0-9]{0,18})-(?:0|[1-9][0-9]{0,18})", re.ASCII)


def flat_ids(events: list[dict[str, Any]]) -> str | None:
    """The events' ids as JSON integers, "ms,seq,ms,seq...", or None if one is not
    a canonical stream id."""
    parts = []
    for event in events:
        event_id = event.get("id") if isinstance(event, dict) else None
        if type(event_id) is not str or _CANONICAL_ID.fullmatch(event_id) is None:
            return None
        parts.append(event_id.replace("-", ","))
    return ",".join(parts) if parts else None


_MEMO_LIMIT = 100_000  # topics come from producers: stay bounded


class UpdateEncoder:
    """(channel, message) per (topic, events): what to PUBLISH for one `update` each.

    The bytes are exactly `jsoncodec.dumpb(update_message(...))` (tests/test_wire.py),
    put together from pieces: the worker publishes about one message per event, and the
    message's fixed keys are encoded once, not once per message."""

    def __init__(self, keys: Keys, host_id: str | None = None) -> None:
        self.keys = keys
        self.host_id = host_id if host_id is not None else uuid.uuid4().hex
        self._topics: dict[str, tuple[str, bytes]] = {}  # topic -> (channel, room JSON)

    @classmethod
    def of(cls, settings: Settings) -> UpdateEncoder:
        return cls(Keys.of(settings))

    def encode_updates(self, batches: Updates) -> list[tuple[str, bytes]]:
        topics, dumpb = self._topics, orjson.dumps
        # When they were published (the commit follows at once): one time for the lot.
        after_ids = b',"sent_at":%s,"host_id":%s,"data":' % (
            dumpb(time.time()),
            dumpb(self.host_id),
        )
        out = []
        for topic, events in batches:
            known = topics.get(topic)
            if known is None:
                if len(topics) >= _MEMO_LIMIT:
                    topics.clear()
                known = topics[topic] = (self.keys.topic_channel(topic), HEAD + dumpb(topic))
            ids = flat_ids(events)
            # `data` is [events]; encoded at the depth the whole message puts it (one
            # list more, sliced off), so data too deep for the message fails as before.
            data = dumpb([[events]])[1:-1]
            parts = (known[1], b',"ids":[%s]' % ids.encode() if ids else b"", after_ids, data)
            out.append((known[0], b"".join((*parts, TAIL))))
        return out


# The fixed parts of a message (`update_message`), around its room, ids, time, host and
# data.
HEAD = b'{"method":"emit","event":%s,"room":' % orjson.dumps(UPDATE_EVENT)
TAIL = b',"binary":false,"namespace":%s,"skip_sid":null,"callback":null}' % orjson.dumps(NAMESPACE)
_DATA = b',"data":[['
_DATA_TAIL = b"]" + TAIL


def split_update(raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    """An `update` message as the encoder puts it together, split without decoding its
    events: (its keys before `data`: method, event, room, ids if any, sent_at, host_id;
    the JSON of its list of events, as published). None for any other message (the
    stock manager's, an older worker's): decode it whole.

    The first `,"data":[[` is the key's: the keys before it are strings (a quote inside
    one is escaped), numbers and lists of numbers."""
    if not (raw.startswith(HEAD) and raw.endswith(_DATA_TAIL)):
        return None
    at = raw.find(_DATA, len(HEAD))
    if at < 0:
        return None
    try:
        head = orjson.loads(raw[:at] + b"}")
    except orjson.JSONDecodeError:
        return None
    return head, raw[at + len(_DATA) - 1 : len(raw) - len(_DATA_TAIL)]
