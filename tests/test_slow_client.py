"""A slow client costs bounded memory and never holds up the others (DESIGN promise 5).

One raw websocket client subscribes and then stops reading (a tiny receive buffer, and
nothing read from the socket) while 50,000 events flow to its topic. A normal client on
the same topic gets every one of them, in order. The stalled one has its updates held
back (conflated to its position) once its backlog reaches the bound, and after
REALTIME_SLOW_CLIENT_S is sent a `closing` event and disconnected: when it reads again
it finds an unbroken prefix of the topic's events, then the reason, then the close.
The web process's RSS grows by less than a stated bound meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from realtime.dev.embedded import RedisServer
from realtime.transport.websocket import OP_TEXT, encode_frame
from tests.helpers.feed import Feed
from tests.helpers.processes import RealtimeProcess
from tests.helpers.stack import fresh_settings, running_stack

pytestmark = pytest.mark.system

TOPIC = "slow.test"
EVENTS = 50_000
PADDING = "x" * 500  # ~600 bytes an event: 30 MB in all, far past any socket buffer
BACKLOG_BYTES = 256 * 1024
SLOW_CLIENT_S = 1
SUBSCRIBE = '421["subscribe",{"topic":"' + TOPIC + '"}]'
RSS_BOUND_MIB = 20  # none stalled: ~10; unbounded backlog: ~35 (python -m bench.slowclient)


@pytest.fixture(scope="module")
def web(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealtimeProcess]:
    settings = fresh_settings(redis_server)
    with running_stack(
        settings, tmp_path_factory.mktemp("slow-stack"),
        REALTIME_CLIENT_BACKLOG_BYTES=str(BACKLOG_BYTES),
        REALTIME_SLOW_CLIENT_S=str(SLOW_CLIENT_S),
        REALTIME_BATCH_SIZE="500",
    ) as web:  # fmt: skip
        yield web


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RawClient:
    """A websocket client on a bare TCP socket with a tiny receive buffer, so that when
    it stops reading the server soon cannot write to it any more."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        # A small StreamReader limit: it stops reading from the socket past 8 KiB.
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send(self, text: str) -> None:
        self.writer.write(encode_frame(OP_TEXT, text.encode(), mask=os.urandom(4)))

    async def recv(self) -> str | None:
        """The next text frame; None when the server closed the connection."""
        try:
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        if first & 0x0F == 0x8:  # a websocket close frame
            return None
        return payload.decode()


async def connect_and_subscribe_raw(web: RealtimeProcess) -> tuple[RawClient, str]:
    assert web.port is not None
    client = await RawClient.connect("127.0.0.1", web.port)
    opened = await client.recv()
    assert opened is not None
    assert opened.startswith("0{"), opened
    client.send("40")
    connected = await client.recv()
    assert connected is not None
    assert connected.startswith("40{"), connected
    client.send(SUBSCRIBE)
    ack = await client.recv()
    assert ack is not None
    assert ack.startswith("431["), ack
    assert json.loads(ack[3:])[0]["ok"] is True
    return client, json.loads(connected[2:])["sid"]


async def read_updates(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[str]:
    """A normal client: reads (and answers pings) until `count` events arrived."""
    ids: list[str] = []
    while len(ids) < count:
        message = await asyncio.wait_for(ws.receive(), 30)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        frame: str = message.data
        if frame == "2":
            await ws.send_str("3")
        elif frame.startswith('42["update",'):
            ids += [event["id"] for event in json.loads(frame[2:])[1]]
    return ids


async def wait_for_log(web: RealtimeProcess, text: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while text not in web.log():  # noqa: ASYNC110 - a log file: no event to wait on
            await asyncio.sleep(0.05)


async def read_after_disconnect(web: RealtimeProcess, client: RawClient, sid: str) -> list[str]:
    """Stay stalled until the server says it disconnects the client, then read it all
    (the server gives a disconnected client a while to read its last frames)."""
    await wait_for_log(web, f"disconnecting client {sid}")
    frames = []
    while (frame := await asyncio.wait_for(client.recv(), 30)) is not None:
        frames.append(frame)
    return frames


async def test_a_stalled_client_is_conflated_then_disconnected_and_costs_bounded_memory(
    web: RealtimeProcess,
) -> None:
    assert web.process is not None
    async with aiohttp.ClientSession() as http:
        normal = await http.ws_connect(f"{web.url}/socket.io/?EIO=4&transport=websocket")
        assert (await normal.receive_str()).startswith("0{")
        await normal.send_str("40")
        assert (await normal.receive_str()).startswith("40{")
        await normal.send_str(SUBSCRIBE)
        assert (await normal.receive_str()).startswith("431[")

        stalled, stalled_sid = await connect_and_subscribe_raw(web)
        rss_before = rss_bytes(web.process.pid)

        feed = Feed(web.url, [TOPIC], batch=1000)
        feed.events = lambda start, count: [  # type: ignore[method-assign]
            {"topic": TOPIC, "data": {"seq": n, "pad": PADDING}}
            for n in range(start, start + count)
        ]
        reading = asyncio.create_task(read_updates(normal, EVENTS))
        stalled_frames = asyncio.create_task(read_after_disconnect(web, stalled, stalled_sid))
        await feed.run(EVENTS, retry_refused=True)
        received = await asyncio.wait_for(reading, 60)
        rss_after = rss_bytes(web.process.pid)

        # The normal client: every event, once, in order.
        assert received == feed.acknowledged[TOPIC]

        # The stalled client was held back, then told why and disconnected.
        frames = await asyncio.wait_for(stalled_frames, 30)
        assert f"client {stalled_sid} fell behind" in web.log()
        assert frames[-3:-1] == [
            '42["closing",{"code":"slow_client","message":"Too slow: the connection could not '
            f'keep up for {SLOW_CLIENT_S}s."}}]',
            "41",
        ], frames[-3:]
        assert frames[-1] == "1"
        got: list[str] = []
        for frame in frames[:-3]:
            if frame.startswith('42["update",'):
                got += [event["id"] for event in json.loads(frame[2:])[1]]
        assert 0 < len(got) < EVENTS
        assert got == feed.acknowledged[TOPIC][: len(got)]  # no gap, no duplicate

        growth_mib = (rss_after - rss_before) / 2**20
        print(f"web RSS growth with one stalled client: {growth_mib:.1f} MiB")
        assert growth_mib < RSS_BOUND_MIB
        await normal.close()
