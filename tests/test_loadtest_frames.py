"""The load generator's wire frames: WebSocket (RFC 6455), Engine.IO v4, Socket.IO v5."""

from __future__ import annotations

import zlib

import pytest

from realtime.loadtest import frames
from realtime.loadtest.frames import FrameReader, ProtocolError

pytestmark = pytest.mark.unit


def unmask(frame: bytes) -> tuple[int, bytes]:
    """Decode one masked client frame the way a server does."""
    assert frame[1] & 0x80, "client frames must be masked"
    length, pos = frame[1] & 0x7F, 2
    if length == 126:
        length, pos = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, pos = int.from_bytes(frame[2:10], "big"), 10
    key, payload = frame[pos : pos + 4], frame[pos + 4 : pos + 4 + length]
    return frame[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_accept_key_is_the_rfc_example() -> None:
    assert frames.ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_client_frames_are_masked_and_decode_back(size: int) -> None:
    payload = bytes(range(256)) * (size // 256 + 1)
    opcode, decoded = unmask(frames.client_frame(payload[:size], frames.OP_TEXT))
    assert (opcode, decoded) == (frames.OP_TEXT, payload[:size])


def test_reader_handles_every_length_split_anywhere() -> None:
    messages = [b"a" * n for n in (1, 125, 126, 300, 70_000)]
    stream = b"".join(frames.server_frame(m) for m in messages)
    for chunk in (1, 7, 1000, len(stream)):
        reader, out = FrameReader(), []
        for i in range(0, len(stream), chunk):
            out += reader.feed(stream[i : i + chunk])
        assert out == [(frames.OP_TEXT, m) for m in messages], chunk


def test_reader_reassembles_fragments_around_a_control_frame() -> None:
    stream = (
        frames.server_frame(b"hel", frames.OP_TEXT, fin=False)
        + frames.server_frame(b"", frames.OP_PING)
        + frames.server_frame(b"lo", frames.OP_CONTINUATION)
    )
    assert FrameReader().feed(stream) == [(frames.OP_PING, b""), (frames.OP_TEXT, b"hello")]


def test_reader_inflates_permessage_deflate_with_context_takeover() -> None:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    reader = FrameReader(deflate=True)
    for text in (b'42["update",[1]]', b'42["update",[1]]'):  # the 2nd leans on the 1st
        body = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
        frame = frames.server_frame(body[:-4])
        frame = bytes([frame[0] | 0x40]) + frame[1:]  # RSV1: compressed
        assert reader.feed(frame) == [(frames.OP_TEXT, text)]


def test_reader_refuses_masked_and_unexpected_compressed_frames() -> None:
    with pytest.raises(ProtocolError, match="masked"):
        FrameReader().feed(frames.client_frame(b"x"))
    with pytest.raises(ProtocolError, match="permessage-deflate"):
        FrameReader().feed(bytes([0xC1, 1]) + b"x")


def test_handshake_response_is_checked() -> None:
    key = frames.new_ws_key()
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Accept: {frames.ws_accept(key)}\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    ).encode()
    assert frames.parse_handshake_response(head[:20]) is None
    response = frames.parse_handshake_response(head + b"\x81\x01x")
    assert response is not None
    assert response.rest == b"\x81\x01x"
    assert frames.check_upgrade(response, key) is True
    with pytest.raises(ProtocolError, match="Accept"):
        frames.check_upgrade(response, frames.new_ws_key())
    refused = frames.parse_handshake_response(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert refused is not None
    with pytest.raises(ProtocolError, match="HTTP 400"):
        frames.check_upgrade(refused, key)


@pytest.mark.parametrize(
    ("text", "kind", "ack_id", "data"),
    [
        ('0{"sid":"abc"}', "0", None, {"sid": "abc"}),
        ('312[{"ok":true}]', "3", 12, [{"ok": True}]),
        ('2["update",[{"id":"1-0"}]]', "2", None, ["update", [{"id": "1-0"}]]),
        ('2/admin,7["x"]', "2", 7, ["x"]),
        ("1", "1", None, None),
    ],
)
def test_socketio_packets_parse(text: str, kind: str, ack_id: int | None, data: object) -> None:
    assert frames.parse_sio(text) == frames.SioPacket(kind, ack_id, data)


def test_bad_socketio_packets_are_protocol_errors() -> None:
    for text in ("", "9", '2["unterminated'):
        with pytest.raises(ProtocolError):
            frames.parse_sio(text)


def test_engineio_packets() -> None:
    assert frames.eio_open('0{"sid":"s1","pingInterval":25000}')["sid"] == "s1"
    with pytest.raises(ProtocolError, match="sid"):
        frames.eio_open('0{"nosid":1}')
    assert frames.sio_connect() == "40"
    assert frames.sio_event("subscribe", {"topic": "a"}, ack_id=3) == (
        '423["subscribe",{"topic":"a"}]'
    )
    assert frames.split_polling_payload('2\x1e42["update",[]]\x1e') == ["2", '42["update",[]]']


def test_update_events_is_the_fast_path_for_update_only() -> None:
    assert frames.update_events(b'42["update",[{"id":"1-0"}]]') == [{"id": "1-0"}]
    # With connection-state recovery on, a string offset comes last.
    assert frames.update_events(b'42["update",[{"id":"1-0"}],"ab1.f"]') == [{"id": "1-0"}]
    assert frames.update_events(b'42["other",[1]]') is None
    assert frames.update_events(b"431[{}]") is None
    with pytest.raises(ProtocolError):
        frames.update_events(b'42["update",{"not":"a list"}]')
