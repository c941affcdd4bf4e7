"""Unit tests: an `update` is encoded once into the bytes every transport needs, the same
bytes python-socketio and aiohttp would have produced."""

from __future__ import annotations

import struct

import pytest
from socketio import packet

from realtime.core import jsoncodec
from realtime.transport.frames import Frame, websocket_text_frame

pytestmark = pytest.mark.unit


def test_update_is_the_socketio_event_packet_as_python_socketio_encodes_it() -> None:
    events = [{"topic": "metrics.cpu", "id": "1-0", "ts": 1, "data": {"value": 4.5, "s": "é"}}]
    packet.Packet.json = jsoncodec
    expected = packet.Packet(packet.EVENT, namespace="/", data=["update", events]).encode()
    frame = Frame.update(events)
    assert frame.packet == expected
    assert frame.message == b"4" + expected.encode()


def test_event_frames_carry_a_name_and_one_argument() -> None:
    frame = Frame.event("closing", {"code": "slow_client"})
    assert frame.packet == '2["closing",{"code":"slow_client"}]'


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, struct.pack("!BB", 0x81, 0)),
        (125, struct.pack("!BB", 0x81, 125)),
        (126, struct.pack("!BBH", 0x81, 126, 126)),
        (65535, struct.pack("!BBH", 0x81, 126, 65535)),
        (65536, struct.pack("!BBQ", 0x81, 127, 65536)),
    ],
)
def test_websocket_text_frames_use_the_shortest_length_encoding(size: int, header: bytes) -> None:
    payload = b"x" * size
    assert websocket_text_frame(payload) == header + payload


def test_the_websocket_form_is_built_once_and_shared() -> None:
    frame = Frame.update([])
    assert frame.websocket is frame.websocket
    assert frame.websocket == websocket_text_frame(b'42["update",[]]')


def test_a_history_page_is_encoded_once_for_everyone_sent_all_of_it() -> None:
    from realtime.delivery.catch_up import Page as _Page

    events = [{"topic": "p.t", "id": f"{n}-0", "ts": n, "data": {"n": n}} for n in (1, 2, 3)]
    page = _Page(events)
    whole = page.frame()
    assert page.frame() is whole  # a room catching up together: one encoding
    assert whole.message == Frame.update(events).message
    marked = _Page(events, "abc.1f")  # with recovery on: one offset for all of them
    assert marked.frame().message == Frame.update(events, "abc.1f").message
    assert marked.frame().message.endswith(b'],"abc.1f"]')


def test_a_page_shared_by_several_replays_is_encoded_once_each_frame_its_own_offset() -> None:
    """A history read answers several subscribes; each replay is a frame of its own (its
    recovery offset), but the page's JSON is made once (`PageJson`, by the page)."""
    from realtime.delivery.catch_up import Page as _Page
    from realtime.delivery.catch_up import PageJson

    shared = [{"topic": "p.t", "id": f"{n}-0", "ts": n, "data": {"n": n}} for n in (1, 2)]
    equal = [dict(e) for e in shared]  # equal, but another page
    json = PageJson(size=2)
    first = json(shared)
    assert json(shared) is first
    assert json(equal) == first
    assert json(equal) is not first
    for offset in ("abc.1", "abc.2", None):
        frame = _Page(shared, offset, json(shared)).frame()
        assert frame.message == Frame.update(shared, offset).message
    json([])
    json([{}])  # two newer pages: `shared` is let go
    assert json(shared) is not first


def test_a_shared_page_is_parsed_once_per_topic() -> None:
    from realtime.delivery.catch_up import PageJson
    from realtime.delivery.subscriptions import Batch

    page = [{"topic": "p.t", "id": f"{n}-0", "ts": n, "data": n} for n in (1, 2)]
    pages = PageJson()
    batch = pages.batch("p.t", page)
    expected = Batch.of("p.t", page)
    assert (batch.topic, batch.events, batch.ids) == (expected.topic, page, expected.ids)
    assert pages.batch("p.t", page) is batch
    assert pages.batch("p.u", page).topic == "p.u"  # another topic: its own
    assert pages.batch("p.t", [dict(e) for e in page]) is not batch
