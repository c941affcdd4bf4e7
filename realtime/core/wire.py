"""The one fan-out encoder: a topic's `update` emit as python-socketio's Redis manager
puts it on the wire between processes. The worker publishes these inside its atomic
commit; the web's `FanoutManager` encodes with it too, and every web instance decodes
them as the stock manager does (extra keys such as `sent_at` are ignored there), then
makes its `update` frame of the events' JSON as published (`events_json`).

Pure: no I/O.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from realtime.core import jsoncodec
from realtime.core.keys import NAMESPACE, UPDATE_EVENT, Keys
from realtime.core.settings import Settings

Updates = Sequence[tuple[str, list[dict[str, Any]]]]  # (topic, events) per `update`


class UpdatesEncoder(Protocol):
    def encode_updates(self, batches: Updates) -> list[tuple[str, bytes]]: ...


def update_message(topic: str, events: list[dict[str, Any]], host_id: str) -> dict[str, Any]:
    """The stock manager's emit message, as `AsyncPubSubManager.emit` builds it."""
    return {
        "method": "emit",
        "event": UPDATE_EVENT,
        "data": [events],
        "binary": False,
        "namespace": NAMESPACE,
        "room": topic,
        "skip_sid": None,
        "callback": None,
        "host_id": host_id,
        # When it was published (the commit follows at once): for the fan-out latency
        # metric.
        "sent_at": time.time(),
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
        self._head = b'{"method":"emit","event":%s,"data":' % jsoncodec.dumpb(UPDATE_EVENT)
        self._room = b',"binary":false,"namespace":%s,"room":' % jsoncodec.dumpb(NAMESPACE)
        self._tail = b',"skip_sid":null,"callback":null,"host_id":%s,"sent_at":' % (
            jsoncodec.dumpb(self.host_id)
        )
        self._topics: dict[str, tuple[str, bytes]] = {}  # topic -> (channel, room JSON)

    @classmethod
    def of(cls, settings: Settings) -> UpdateEncoder:
        return cls(Keys.of(settings))

    def encode_updates(self, batches: Updates) -> list[tuple[str, bytes]]:
        head, room, topics, dumpb = self._head, self._room, self._topics, orjson.dumps
        # When they were published (the commit follows at once): one time for the lot.
        tail = b"%s%s}" % (self._tail, dumpb(time.time()))
        out = []
        for topic, events in batches:
            known = topics.get(topic)
            if known is None:
                if len(topics) >= _MEMO_LIMIT:
                    topics.clear()
                known = topics[topic] = (self.keys.topic_channel(topic), dumpb(topic))
            # `data` is [events]; encoded at the depth the whole message puts it (one
            # list more, sliced off), so data too deep for the message fails as before.
            data = dumpb([[events]])[1:-1]
            out.append((known[0], b"".join((head, data, room, known[1], tail))))
        return out


# Around the events of a message as the encoder lays it out (the stock key order, compact)
_DATA_HEAD = b'{"method":"emit","event":%s,"data":[' % orjson.dumps(UPDATE_EVENT)
_AFTER_DATA = b'],"binary":false,"namespace":%s,"room":' % orjson.dumps(NAMESPACE)


def events_json(raw: bytes) -> bytes | None:
    """The JSON list of an `update` message's events, as published, if the message is
    laid out as this encoder lays it out (older workers' too); None for any other
    layout. Only for a message that decoded whole as an `update`: then its `data` is
    `[events]`, and the last `],"binary":false,...,"room":` is the one after it (after
    it come only strings, in which a quote is escaped, and numbers)."""
    if not raw.startswith(_DATA_HEAD):
        return None
    end = raw.rfind(_AFTER_DATA)
    if end <= len(_DATA_HEAD) or raw[end - 1 : end] != b"]":
        return None
    return raw[len(_DATA_HEAD) : end]
