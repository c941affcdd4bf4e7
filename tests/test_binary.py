"""Binary packets (Socket.IO `BINARY_EVENT` 5 and `BINARY_ACK` 6, each followed by its
attachments) against a real web process: spoken by hand over the websocket and over
long-polling, as the Swift and Java SDKs send them, and by python-socketio's client. They
reach an extension's handler as bytes; the project's own events answer them `invalid`;
a packet past the bounds (`MAX_ATTACHMENTS`, the largest message) closes that connection.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import socketio

from realtime.core import jsoncodec
from realtime.dev.embedded import RedisServer
from realtime.transport.inbound import MAX_ATTACHMENTS, attachment_malformed, malformed
from realtime.transport.server import Packet, SocketServer
from tests.helpers.processes import RealtimeProcess
from tests.helpers.stack import fresh_settings, running_stack
from tests.test_raw_protocol import RawPolling, RawWebsocket, eio_url, parse_open

MAX_MESSAGE = 2048
PLACEHOLDER = '{"_placeholder":true,"num":0}'


@pytest.fixture(scope="module")
def web(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealtimeProcess]:
    settings = fresh_settings(redis_server)
    with running_stack(
        settings,
        tmp_path_factory.mktemp("binary"),
        REALTIME_EXTENSIONS="tests.helpers.ext_probe:setup",
        REALTIME_MAX_MESSAGE_BYTES=str(MAX_MESSAGE),
    ) as web:
        yield web


@pytest.fixture
async def ws(web: RealtimeProcess) -> AsyncIterator[RawWebsocket]:
    """A raw websocket connected to `/` (the probe's welcome read)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(eio_url(web, "websocket")) as ws:
        raw = RawWebsocket(ws)
        parse_open(await raw.recv())
        await raw.send("40")
        assert (await raw.recv()).startswith("40{")
        assert (await raw.recv()).startswith('42["welcome"')
        yield raw


async def binary_frame(raw: RawWebsocket) -> bytes:
    message = await raw.ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.BINARY, message
    data: bytes = message.data
    return data


async def closed_by_server(raw: RawWebsocket) -> None:
    """The server ends the connection: its Engine.IO close (`1`), then the websocket's."""
    while True:
        message = await raw.ws.receive(timeout=10)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return
        assert message.type == aiohttp.WSMsgType.TEXT, message
        assert message.data in ("1", "2", "6"), message  # close, ping, noop


@pytest.mark.system
async def test_a_binary_event_over_the_websocket_reaches_the_handler_and_is_acked_in_binary(
    ws: RawWebsocket,
) -> None:
    await ws.send(f'451-7["echo-binary",{PLACEHOLDER}]')
    await ws.ws.send_bytes(b"\x01\x02\x03")
    assert await ws.recv() == f"461-7[[3],{PLACEHOLDER}]"
    assert await binary_frame(ws) == b"\x03\x02\x01"


@pytest.mark.system
async def test_the_projects_events_answer_binary_with_invalid_and_stay_open(
    ws: RawWebsocket,
) -> None:
    await ws.send(f'451-8["subscribe",{PLACEHOLDER}]')
    await ws.ws.send_bytes(b"metrics.cpu")
    frame = await ws.recv()
    assert frame.startswith("438["), frame
    [ack] = json.loads(frame[3:])
    assert ack["ok"] is False
    assert ack["error"]["code"] == "invalid"
    assert await ws.call(9, "subscribe", {"topic": "binary.ok"}) == {
        "ok": True,
        "topic": "binary.ok",
        "since": "0-0",
    }


@pytest.mark.system
async def test_too_many_attachments_close_the_connection(ws: RawWebsocket) -> None:
    count = MAX_ATTACHMENTS + 1
    placeholders = ",".join(f'{{"_placeholder":true,"num":{n}}}' for n in range(count))
    await ws.send(f'45{count}-["echo-binary",{placeholders}]')
    await closed_by_server(ws)


@pytest.mark.system
async def test_attachments_over_the_largest_message_close_the_connection(
    ws: RawWebsocket,
) -> None:
    """Each attachment fits in a message; together they do not."""
    await ws.send('452-["echo-binary",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    await ws.ws.send_bytes(b"x" * (MAX_MESSAGE // 2 + 100))
    await ws.ws.send_bytes(b"y" * (MAX_MESSAGE // 2 + 100))
    await closed_by_server(ws)


@pytest.mark.system
async def test_a_binary_event_over_long_polling(web: RealtimeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        poll = RawPolling(http, web)
        await poll.open()
        await poll.post("40")
        frames = await poll.frames_until(2)  # the CONNECT, then the probe's welcome
        assert frames[0].startswith("40{")
        encoded = base64.b64encode(b"\x00\xffhi").decode()
        await poll.post(f'451-3["echo-binary",{PLACEHOLDER}]', "b" + encoded)
        header, attachment = await poll.frames_until(2)
        assert header == f"461-3[[4],{PLACEHOLDER}]"
        assert base64.b64decode(attachment[1:]) == b"ih\xff\x00"
        assert attachment[0] == "b"


@pytest.mark.system
@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_python_socketio_client_round_trip(web: RealtimeProcess, transport: str) -> None:
    sio = socketio.AsyncClient(json=jsoncodec, handle_sigint=False)
    await sio.connect(web.url, transports=[transport], wait_timeout=10)
    try:
        answer = await sio.call("echo-binary", (b"abc", b"\x00\xff"), timeout=10)
        assert answer == ([3, 2], b"cba", b"\xff\x00")
        assert sio.connected
    finally:
        await sio.disconnect()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("packet", "ok"),
    [
        (f'51-["e",{PLACEHOLDER}]', True),
        (f'51-/chat,4["e",{PLACEHOLDER}]', True),
        (f"61-3[{PLACEHOLDER}]", True),
        (f'50-["e",{PLACEHOLDER}]', False),  # announces nothing
        (f'5{MAX_ATTACHMENTS + 1}-["e",{PLACEHOLDER}]', False),
        ('51-["e",{"_placeholder":true,"num":1}]', False),  # names an attachment not announced
        ('51-["e",{"_placeholder":true,"num":"0"}]', False),
        ('51-["e",{"_placeholder":true,"num":true}]', False),
        ('51-{"e":1}', False),
        (f'51-["connect",{PLACEHOLDER}]', False),  # reserved, binary or not
    ],
)
def test_binary_packets_checked(packet: str, ok: bool) -> None:
    assert (malformed(packet) is None) is ok


@pytest.mark.unit
def test_attachments_checked() -> None:
    assert attachment_malformed(b"x" * 10, 0, 10) is None
    assert attachment_malformed(b"x", 10, 10) is not None  # past the bound, together
    assert attachment_malformed("text", 0, 10) is not None
    assert malformed(b"\x00") is not None  # an attachment nobody announced


@pytest.mark.unit
@pytest.mark.parametrize(
    "data",
    [
        None,
        ["subscribe", {"topic": "a", "events": [{"id": "1-0", "data": {"x": [1, 2.5, None]}}]}],
        [{"ok": True, "events": [{"data": {"deep": [[[[[{"k": "v"}]]]]]}}] * 10}],
        b"raw",
        bytearray(b"raw"),
        ["e", {"file": b"\x00\x01"}],
        ["e", {"nested": [1, [2, {"b": bytearray(b"x")}]]}],
        ["e", (b"in a tuple",)],  # python-socketio walks lists and dicts only
        ["e", {1: "an int key"}],
        ["e", {1: b"an int key"}],
        ["e", 2**70],
        ["e", 2**70, b"x"],
        ["e", float("nan")],
        ("a", "tuple"),
    ],
)
def test_our_packets_tell_binary_data_as_python_socketio_does(data: object) -> None:
    """`SocketServer`'s packets test for bytes through orjson first: whatever the data,
    the answer (and so the packet type: BINARY_ACK or ACK) is python-socketio's."""
    stock = socketio.packet.Packet(socketio.packet.ACK, data=data, id=1)
    ours = Packet(socketio.packet.ACK, data=data, id=1)
    assert Packet.data_is_binary(data) is socketio.packet.Packet.data_is_binary(data)
    assert ours.packet_type == stock.packet_type


@pytest.mark.unit
def test_the_server_makes_its_packets_with_the_cheaper_test() -> None:
    server = SocketServer(async_mode="aiohttp", json=jsoncodec)
    assert server.packet_class is Packet
    assert Packet.json is jsoncodec
