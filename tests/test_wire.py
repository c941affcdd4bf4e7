"""The fan-out encoder puts its message together from pieces (`realtime/core/wire.py`):
its bytes are exactly those of the stock message (`update_message`) encoded whole, and
what the whole message cannot encode, it cannot either."""

from __future__ import annotations

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


ids = st.tuples(st.integers(0, 2**63), st.integers(0, 2**63)).map(lambda p: f"{p[0]}-{p[1]}")
with_ids = st.lists(
    st.fixed_dictionaries({"id": ids}, optional={"data": values}), min_size=1, max_size=3
)


@given(
    topic=st.text(min_size=1, max_size=12),
    drawn=st.one_of(with_ids.map(lambda e: (e, True)), events.map(lambda e: (e, False))),
    host_id=st.text(max_size=8),
)
def test_a_message_splits_into_the_keys_before_data_and_its_events_as_published(
    topic: str, drawn: tuple[list[dict[str, Any]], bool], host_id: str
) -> None:
    """What a web instance reads of the worker's message without decoding its events
    (`split_update`) is what decoding it whole gives."""
    events, canonical = drawn
    try:
        [(_, message)] = UpdateEncoder(Keys("rt:"), host_id).encode_updates([(topic, events)])
    except jsoncodec.JSONEncodeError:
        return
    whole = jsoncodec.loads(message)
    split = wire.split_update(message)
    assert split is not None
    head, events_json = split
    assert jsoncodec.loads(events_json) == whole["data"][0] == events
    assert head == {k: v for k, v in whole.items() if k not in TAIL_KEYS}
    if canonical:
        assert head["ids"] == [int(p) for e in events for p in e["id"].split("-")]


TAIL_KEYS = {"data", "binary", "namespace", "skip_sid", "callback"}


@pytest.mark.parametrize(
    "message",
    [
        # an older worker's: data first
        b'{"method":"emit","event":"update","data":[[{"id":"1-0"}]],"binary":false,'
        b'"namespace":"/","room":"a","skip_sid":null,"callback":null,"host_id":"h",'
        b'"sent_at":1.5}',
        # python-socketio's own emit
        b'{"method":"emit","event":"update","data":[[{"id":"1-0"}]],"binary":false,'
        b'"namespace":"/","room":"a","skip_sid":null,"callback":null,"host_id":"h"}',
        # another namespace
        b'{"method":"emit","event":"update","room":"a","data":[[{"id":"1-0"}]],'
        b'"binary":false,"namespace":"/x","skip_sid":null,"callback":null}',
        b"not json",
    ],
)
def test_any_other_message_is_decoded_whole(message: bytes) -> None:
    assert wire.split_update(message) is None


def test_ids_are_left_out_unless_each_is_a_canonical_stream_id() -> None:
    assert wire.flat_ids([{"id": "1700000000000-0"}, {"id": "1700000000000-1"}]) == (
        "1700000000000,0,1700000000000,1"
    )
    for bad in ("01-0", "1-00", "1", "1-0 ", "-1-0", "1-1e3", "99999999999999999999-0", 5):
        assert wire.flat_ids([{"id": "1-0"}, {"id": bad}]) is None, bad
    assert wire.flat_ids([]) is None
