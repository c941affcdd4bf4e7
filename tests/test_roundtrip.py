"""Promise 8, as a property: whatever the ingest schema accepts, every encoder on the way
to a client (the ingest entry, the worker's history write, fan-out message and commit
batch, the web's `update` frames, of decoded events or of the events' JSON as the worker
published it, and python-socketio's packet) encodes, and what the client decodes is the
data the producer sent, exactly."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
import socketio
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipelines.transform import decode_entry, group_by_topic, passthrough
from processors.worker.history_writes import history_write
from realtime.core import jsoncodec
from realtime.core.keys import UPDATE_EVENT, Keys
from realtime.core.settings import Settings
from realtime.core.wire import UpdateEncoder, split_update
from realtime.delivery.history import decode_event
from realtime.ingest.api import _big_integers, ingest_fields
from realtime.ingest.schemas import MAX_DATA_DEPTH, EventSchema
from realtime.transport.frames import Frame
from tests.helpers.json_values import values

pytestmark = pytest.mark.unit


@st.composite
def deep(draw: st.DrawFn) -> dict[str, Any]:
    """An object with `value` inside, nested to a depth around the limit."""
    depth = draw(st.one_of(st.integers(1, 8), st.integers(MAX_DATA_DEPTH - 3, MAX_DATA_DEPTH + 60)))
    inner: Any = draw(values)
    for level in range(depth - 1):
        inner = [inner] if draw(st.booleans()) or level % 7 else {"k": inner}
    return {"v": inner}


class Packet(socketio.packet.Packet):  # type: ignore[misc]
    json = jsoncodec  # as the server sets it (`AsyncServer(json=jsoncodec)`)


@functools.cache
def fanout() -> UpdateEncoder:
    """The worker's encoder of fan-out messages."""
    return UpdateEncoder.of(Settings(prefix="rt:"))


def through_the_pipeline(event: dict[str, Any]) -> list[Any]:
    """The data each client-facing decoder gets back after the exact encoders."""
    keys = Keys("rt:")
    fields = ingest_fields(event, 1)
    ingest = decode_entry("1-0", fields)  # the worker reads the ingest entry
    [topic_event] = passthrough(ingest)
    write = history_write(keys, topic_event)
    [(channel, message)] = fanout().encode_updates(group_by_topic([topic_event]))
    # The commit script's one JSON argument carries the history write and the publish.
    batch = jsoncodec.dumpb(
        {"h": [[write.key, write.id, write.fields]], "p": [[channel, message.decode()]]}
    )
    decoded = jsoncodec.loads(batch)
    stored = dict(zip(decoded["h"][0][2][::2], decoded["h"][0][2][1::2], strict=True))
    # History as the web reads it (replay), and the fan-out message as the web gets it.
    replayed = decode_event(
        event["topic"], "1-0", {k.encode(): v.encode() for k, v in stored.items()}
    )
    published = decoded["p"][0][1].encode()
    live = jsoncodec.loads(published)["data"][0]
    # The web's frame of the events as published, undecoded (`split_update`).
    split = split_update(published)
    assert split is not None
    got = [jsoncodec.loads(Frame.update_json(split[1]).message[2:])[1][0]["data"]]
    for events in (live, [replayed]):
        # The web's own frame, and python-socketio's packet (emits other than updates).
        frame = Frame.update(events).message
        assert frame.startswith(b"42")
        got.append(jsoncodec.loads(frame[2:])[1][0]["data"])
        packet = Packet(socketio.packet.EVENT, data=[UPDATE_EVENT, events]).encode()
        got.append(jsoncodec.loads(str(packet)[1:])[1][0]["data"])
    return got


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(deep(), st.dictionaries(st.text(max_size=5), values, max_size=4)))
def test_what_ingest_accepts_reaches_clients_exactly(data: dict[str, Any]) -> None:
    # A producer's body (the stdlib writes any int), checked as the ingest handler does.
    body = json.dumps({"topic": "metrics.cpu", "data": data}).encode()
    try:
        payload = jsoncodec.loads(body)
    except jsoncodec.JSONDecodeError:
        return  # deeper than the decoder's limit: 400 invalid_json
    problems = EventSchema().validate(payload)
    if problems:
        assert set(problems) == {"data"}  # 400 invalid, naming the field
        return
    event = EventSchema().load(payload)
    if _big_integers(body, [event]):
        return  # 400 invalid, naming the event's data
    for decoded in through_the_pipeline(event):
        assert decoded == data
