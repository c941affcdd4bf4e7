"""The fan-out encoder puts its message together from pieces (`realtime/core/wire.py`):
its bytes are exactly those of the stock message (`update_message`) encoded whole, and
what the whole message cannot encode, it cannot either."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.core import jsoncodec, wire
from realtime.core.keys import Keys
from realtime.core.wire import UpdateEncoder, update_message
from tests.helpers.json_values import values

pytestmark = pytest.mark.unit

events = st.lists(st.dictionaries(st.text(max_size=5), values, max_size=4), min_size=1, max_size=3)


@given(
    batches=st.lists(st.tuples(st.text(min_size=1, max_size=12), events), max_size=4),
    host_id=st.text(max_size=8),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_the_message_is_the_stock_message_encoded_whole(
    batches: list[tuple[str, list[dict[str, Any]]]],
    host_id: str,
    now: float,
) -> None:
    keys = Keys("rt:")
    encoder = UpdateEncoder(keys, host_id)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wire.time, "time", lambda: now)
        try:
            expected = [
                (keys.topic_channel(t), jsoncodec.dumpb(update_message(t, events, host_id)))
                for t, events in batches
            ]
        except jsoncodec.JSONEncodeError:  # integers beyond 64 bits: it fails as well
            with pytest.raises(jsoncodec.JSONEncodeError):
                encoder.encode_updates(batches)
            return
        assert encoder.encode_updates(batches) == expected
        assert encoder.encode_updates(batches) == expected  # from its memo of topics too


def test_a_message_decodes_as_the_stock_manager_reads_it() -> None:
    [(channel, message)] = UpdateEncoder(Keys("rt:"), "h1").encode_updates(
        [("a.b", [{"topic": "a.b", "id": "1-0", "ts": 1, "data": {"x": 1}}])]
    )
    decoded = jsoncodec.loads(message)
    assert channel == Keys("rt:").topic_channel("a.b")
    assert decoded["method"] == "emit"
    assert decoded["room"] == "a.b"
    assert decoded["data"] == [[{"topic": "a.b", "id": "1-0", "ts": 1, "data": {"x": 1}}]]
    assert decoded["host_id"] == "h1"
    assert isinstance(decoded["sent_at"], float)


@pytest.mark.parametrize("depth", [248, 249, 250, 251, 252, 253, 254])
def test_data_too_deep_for_the_message_fails_as_the_message_would(depth: int) -> None:
    """The message nests `data` four levels down: encoded in pieces, the same data fails."""
    data: dict[str, Any] = {}
    for _ in range(depth - 1):
        data = {"x": data}
    events = [{"topic": "a", "id": "1-0", "ts": 1, "data": data}]
    encoder = UpdateEncoder(Keys("rt:"), "h")
    try:
        expected = jsoncodec.dumpb(update_message("a", events, "h"))
    except jsoncodec.JSONEncodeError:
        with pytest.raises(jsoncodec.JSONEncodeError):
            encoder.encode_updates([("a", events)])
        return
    [(_, message)] = encoder.encode_updates([("a", events)])
    assert message.split(b',"sent_at"')[0] == expected.split(b',"sent_at"')[0]


ids = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)).map("{0[0]}-{0[1]}".format)
with_ids = st.lists(
    st.fixed_dictionaries({"id": ids}, optional={"data": values}), min_size=1, max_size=3
)


@given(
    topic=st.text(min_size=1, max_size=12),
    events=st.one_of(with_ids, events),
    host_id=st.text(max_size=8),
)
def test_a_message_splits_into_the_keys_before_data_and_its_events_as_published(
    topic: str, events: list[dict[str, Any]], host_id: str
) -> None:
    """What a web instance reads of the worker's message without decoding its events
    (`split_update`) is what decoding it whole gives, whatever the topic, host, ids or
    events (keys and strings like the message's own included)."""
    try:
        [(_, message)] = UpdateEncoder(Keys("rt:"), host_id).encode_updates([(topic, events)])
    except jsoncodec.JSONEncodeError:
        return
    whole = jsoncodec.loads(message)
    split = wire.split_update(message)
    if split is None:  # only when an id holds the message's own `,"data":[[`
        assert b',"data":[[' in jsoncodec.dumpb(whole["ids"])
        return
    head, events_json = split
    assert jsoncodec.loads(events_json) == whole["data"][0] == events
    assert head == {k: v for k, v in whole.items() if k not in TAIL_KEYS}
    assert head["ids"] == [e.get("id") for e in events]


TAIL_KEYS = {"data", "binary", "namespace", "skip_sid", "callback"}


def test_events_inside_which_the_message_s_own_keys_appear_are_split_whole() -> None:
    tail = {"binary": False, "namespace": "/", "skip_sid": None, "callback": None}
    events = [{"id": "1-0", "data": [[tail]], "x": {"data": [[1]]}}, {"id": "2-0", **tail}]
    [(_, message)] = UpdateEncoder(Keys("rt:"), "h").encode_updates([("a", events)])
    split = wire.split_update(message)
    assert split is not None
    assert jsoncodec.loads(split[1]) == events


@pytest.mark.parametrize(
    "message",
    [
        # an older worker's: data first
        b'{"method":"emit","event":"update","data":[[{"id":"1-0"}]],"binary":false,'
        b'"namespace":"/","room":"a","skip_sid":null,"callback":null,"host_id":"h",'
        b'"sent_at":1.5}',
        # python-socketio's own emit, as its json module writes it (spaces)
        json.dumps(update_message("a", [{"id": "1-0"}], "h")).encode(),
        # another namespace
        b'{"method":"emit","event":"update","room":"a","ids":["1-0"],"data":[[{"id":"1-0"}]],'
        b'"binary":false,"namespace":"/x","skip_sid":null,"callback":null}',
        b"not json",
    ],
)
def test_any_other_message_is_decoded_whole(message: bytes) -> None:
    assert wire.split_update(message) is None
