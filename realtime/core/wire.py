"""The one fan-out encoder: a topic's `update` emit as python-socketio's Redis manager
puts it on the wire between processes. The worker publishes these inside its atomic
commit; the web's `FanoutManager` encodes with it too. A web instance reads the keys
before `data` alone (`split_update`) and passes the events on undecoded; the stock
manager, and older web instances, decode it whole (extra keys such as `ids` and
`sent_at` are ignored there).

Pure: no I/O.
"""

from __future__ import annotations

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
    keys of ours (the stock manager ignores extra keys): `ids`, the events' ids, and
    `sent_at`. The keys a web instance routes by come before `data`, so that it can
    read them without decoding the events (`split_update`)."""
    return {
        "method": "emit",
        "event": UPDATE_EVENT,
        "room": topic,
        "ids": [event.get("id") for event in events],
        # When it was published (the commit follows at once): for the fan-out latency
        # metric.
        "sent_at": time.time(),
        "host_id": host_id,
        "data": [events],
        "binary": False,
        "namespace": NAMESPACE,
        "skip_sid": None,
        "callback": None,
    }


_MEMO_LIMIT = 100_000  # topics come from producers: stay bounded


class UpdateEncoder:
    """(channel, message) per (topic, events): what to PUBLISH for one `update` each.

    The bytes are exactly `jsoncodec.dumpb(update_message(...))` (tests/test_wire.py),
    put together from pieces: the worker publishes about one message per event, and the
    message's fixed keys are encoded once, not once per message."""

    def __init__(self, keys: Keys, host_id: str | None = None) -> None:
        self.keys = keys
        self.host_id = host_id if host_id is not None else uuid.uuid4().hex
        # topic -> (channel, the message up to its ids)
        self._topics: dict[str, tuple[str, bytes]] = {}

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
                room = b'%s%s,"ids":' % (HEAD, dumpb(topic))
                known = topics[topic] = (self.keys.topic_channel(topic), room)
            ids = dumpb([event.get("id") for event in events])
            # `data` is [events]; encoded at the depth the whole message puts it (one
            # list more, sliced off), so data too deep for the message fails as before.
            data = dumpb([[events]])[1:-1]
            out.append((known[0], b"".join((known[1], ids, after_ids, data, TAIL))))
        return out


# The fixed parts of a message (`update_message`), around its room, ids, time, host and
# data.
HEAD = b'{"method":"emit","event":%s,"room":' % orjson.dumps(UPDATE_EVENT)
TAIL = b',"binary":false,"namespace":%s,"skip_sid":null,"callback":null}' % orjson.dumps(NAMESPACE)
_DATA = b',"data":[['
_DATA_TAIL = b"]" + TAIL


def split_update(raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    """An `update` message as the encoder puts it together, split without decoding its
    events: (its keys before `data`: method, event, room, ids, sent_at, host_id; the
    JSON of its list of events, as published). None for any other message (the stock
    manager's, an older worker's): decode it whole.

    The first `,"data":[[` after the room is the key's: in a string, a quote is
    escaped; and if an id is no string but holds one, it is cut inside `ids`, which
    then does not decode."""
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
