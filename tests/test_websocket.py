"""Unit tests: the websocket protocol as the server reads and writes it once aiohttp has
handed a connection over (`realtime.transport.websocket`): the handshake answer, client frames
(masking, fragmentation, control frames, bounds) and the frames the server builds."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.transport import websocket
from realtime.transport.websocket import FrameReader, HandshakeError, ProtocolError

pytestmark = pytest.mark.unit

MASK = b"\x37\xfa\x21\x3d"


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = MASK, rsv: int = 0
) -> bytes:
    """A frame as a client writes it: masked unless mask is None."""
    return websocket.encode_frame(opcode, payload, fin=fin, mask=mask, rsv=rsv)


def handshake(**overrides: str) -> dict[str, str]:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    headers.update(overrides)
    return {k: v for k, v in headers.items() if v}


# -- the handshake ------------------------------------------------------------------------


def test_the_handshake_answer_carries_the_accept_key_of_rfc_6455() -> None:
    assert websocket.handshake_headers(handshake()) == {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",  # the RFC's own example
    }


def test_connection_may_list_more_tokens() -> None:
    assert websocket.handshake_headers(handshake(Connection="keep-alive, Upgrade"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"Upgrade": ""},
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
        {"Sec-WebSocket-Version": "8"},
        {"Sec-WebSocket-Key": ""},
        {"Sec-WebSocket-Key": "not base64!"},
        {"Sec-WebSocket-Key": "c2hvcnQ="},  # 5 bytes, not 16
    ],
)
def test_other_requests_are_not_handshakes(overrides: dict[str, str]) -> None:
    with pytest.raises(HandshakeError):
        websocket.handshake_headers(handshake(**overrides))


# -- frames the server writes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, struct.pack("!BB", 0x8A, 0)),
        (125, struct.pack("!BB", 0x8A, 125)),
        (126, struct.pack("!BBH", 0x8A, 126, 126)),
        (65536, struct.pack("!BBQ", 0x8A, 127, 65536)),
    ],
)
def test_server_frames_are_final_and_unmasked(size: int, header: bytes) -> None:
    payload = b"p" * size
    assert websocket.frame(websocket.OP_PONG, payload) == header + payload


def test_a_close_frame_carries_the_code_and_a_reason_cut_to_fit() -> None:
    frame = websocket.close_frame(1003, "x" * 500)
    assert frame[:2] == bytes([0x88, 125])
    assert struct.unpack("!H", frame[2:4]) == (1003,)
    assert frame[4:] == b"x" * 123


# -- frames the server reads --------------------------------------------------------------


def test_a_masked_text_frame_is_one_message() -> None:
    reader = FrameReader(1024)
    assert reader.feed(client_frame(websocket.OP_TEXT, b"42[]")) == [(websocket.OP_TEXT, b"42[]")]


def test_frames_split_anywhere_and_run_together_read_the_same() -> None:
    stream = b"".join(client_frame(websocket.OP_TEXT, f"4{i}".encode() * i) for i in range(1, 40))
    stream += client_frame(websocket.OP_TEXT, b"x" * 300)  # a 16-bit length
    whole = FrameReader(1024).feed(stream)
    assert len(whole) == 40
    reader = FrameReader(1024)
    byte_by_byte = [m for i in range(len(stream)) for m in reader.feed(stream[i : i + 1])]
    assert byte_by_byte == whole


def test_a_64_bit_length_is_read() -> None:
    payload = bytes(range(256)) * 300
    assert FrameReader(100_000).feed(client_frame(websocket.OP_BINARY, payload)) == [
        (websocket.OP_BINARY, payload)
    ]


def test_a_fragmented_message_is_reassembled_around_a_ping() -> None:
    reader = FrameReader(1024)
    stream = (
        client_frame(websocket.OP_TEXT, b"42[", fin=False)
        + client_frame(websocket.OP_CONTINUATION, b'"a"', fin=False)
        + client_frame(websocket.OP_PING, b"hi")  # control frames may come in between
        + client_frame(websocket.OP_CONTINUATION, b"]")
    )
    assert reader.feed(stream) == [(websocket.OP_PING, b"hi"), (websocket.OP_TEXT, b'42["a"]')]
    assert reader.feed(client_frame(websocket.OP_TEXT, b"3")) == [(websocket.OP_TEXT, b"3")]


def test_control_frames_come_out_as_they_are() -> None:
    reader = FrameReader(1024)
    close = client_frame(websocket.OP_CLOSE, struct.pack("!H", 1000))
    pong = client_frame(websocket.OP_PONG, b"")
    assert reader.feed(pong + close) == [
        (websocket.OP_PONG, b""),
        (websocket.OP_CLOSE, struct.pack("!H", 1000)),
    ]


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        (client_frame(websocket.OP_TEXT, b"40", mask=None), "masked"),
        (client_frame(websocket.OP_TEXT, b"40", rsv=0x40), "reserved"),  # compressed: not offered
        (client_frame(3, b"x"), "opcode"),
        (client_frame(0xB, b"x"), "opcode"),
        (client_frame(websocket.OP_PING, b"x" * 126), "control"),
        (client_frame(websocket.OP_PING, b"x", fin=False), "control"),
        (client_frame(websocket.OP_CONTINUATION, b"x"), "continuation"),
        (client_frame(websocket.OP_TEXT, b"4", fin=False) + client_frame(1, b"0"), "inside"),
    ],
)
def test_protocol_errors_close_with_1002(stream: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why) as caught:
        FrameReader(1024).feed(stream)
    assert caught.value.code == websocket.CLOSE_PROTOCOL_ERROR


def test_a_message_over_the_bound_is_refused_from_its_header() -> None:
    frame = client_frame(websocket.OP_TEXT, b"x" * 2000)
    with pytest.raises(ProtocolError) as caught:
        FrameReader(1024).feed(frame[:8])  # the header alone: nothing more is waited for
    assert caught.value.code == websocket.CLOSE_TOO_BIG
    assert FrameReader(2000).feed(frame) == [(websocket.OP_TEXT, b"x" * 2000)]


def test_a_fragmented_message_over_the_bound_is_refused() -> None:
    reader = FrameReader(1024)
    assert reader.feed(client_frame(websocket.OP_TEXT, b"x" * 1000, fin=False)) == []
    with pytest.raises(ProtocolError) as caught:
        reader.feed(client_frame(websocket.OP_CONTINUATION, b"x" * 25))
    assert caught.value.code == websocket.CLOSE_TOO_BIG


def test_an_idle_reader_holds_nothing() -> None:
    reader = FrameReader(1024)
    frame = client_frame(websocket.OP_TEXT, b"3")
    reader.feed(frame[:3])
    reader.feed(frame[3:])
    assert reader._buffer is None
    assert reader._fragments is None


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1),
    st.binary(min_size=4, max_size=4),
)
def test_any_messages_in_any_chunks_read_back(
    messages: list[bytes], cuts: list[int], mask: bytes
) -> None:
    stream = b"".join(client_frame(websocket.OP_BINARY, m, mask=mask) for m in messages)
    reader = FrameReader(1024)
    got: list[tuple[int, bytes]] = []
    pos = 0
    for i in range(len(stream)):
        step = cuts[i % len(cuts)]
        got += reader.feed(stream[pos : pos + step])
        pos += step
        if pos >= len(stream):
            break
    assert got == [(websocket.OP_BINARY, m) for m in messages]
