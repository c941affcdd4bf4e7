"""Promise 8's "every connection and request is bounded in time", and malformed HTTP,
at the socket: raw bytes to the web app served in-process against real Redis.

With `REALTIME_READ_TIMEOUT_S` short: a connection that never completes its request
headers (or sends nothing, or idles after a response) is closed; a request body that
never ends is answered 408 and closed; an oversized long-polling POST is answered and
closed. Malformed HTTP is answered 400 and logged at INFO in one line, no traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from realtime.core.settings import Settings
from tests.helpers.inprocess import running_app

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 1


@pytest.fixture
async def address(settings: Settings) -> AsyncIterator[tuple[str, int]]:
    async with running_app(settings.with_overrides(read_timeout_s=READ_TIMEOUT_S)) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        yield parts.hostname, parts.port


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (fails if it has not within 20 s)."""
    return await asyncio.wait_for(reader.read(), 20)


@pytest.mark.parametrize(
    "partial",
    [
        b"",  # connects and sends nothing
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # headers never finished
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # a response, then idle keep-alive
    ],
)
async def test_a_connection_that_does_not_complete_a_request_is_closed(
    address: tuple[str, int], partial: bytes
) -> None:
    """V6: headers sent a byte at a time, or none, held the connection open forever."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(partial)
        await writer.drain()
        answer = await closed_by_server(reader)
        if partial.endswith(b"\r\n\r\n"):
            assert answer.startswith(b"HTTP/1.1 200")
        else:
            assert answer == b""
    finally:
        writer.close()


async def test_a_body_that_never_ends_is_answered_408_and_closed(
    address: tuple[str, int],
) -> None:
    """V6: a chunked ingest body that never ends stayed open (75 s and more)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n[{"to\r\n'
        )
        await writer.drain()
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"code":"timeout"' in answer
    finally:
        writer.close()


async def test_an_oversized_long_polling_post_is_answered_and_closed(
    address: tuple[str, int], settings: Settings
) -> None:
    """V6: the session ended but the POST was never answered and its connection stayed."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        sid = await open_polling_session(reader, writer)
        big = b"4" + b"x" * (settings.max_message_bytes + 10)
        writer.write(
            b"POST /socket.io/?EIO=4&transport=polling&sid=" + sid + b" HTTP/1.1\r\n"
            b"Host: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: " + str(len(big)).encode() + b"\r\n\r\n" + big
        )
        await writer.drain()
        answer = await closed_by_server(reader)
        status = answer.split(b"\r\n", 1)[0]
        assert status in (b"HTTP/1.1 413 Request Entity Too Large", b"HTTP/1.1 400 Bad Request")
        status, _ = await poll(address, sid)
        assert status == b"HTTP/1.1 400 Bad Request"  # and the session is over
    finally:
        writer.close()


async def test_a_long_polling_post_body_that_never_ends_ends_the_session_answered(
    address: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*address)
    try:
        sid = await open_polling_session(reader, writer)
        writer.write(
            b"POST /socket.io/?EIO=4&transport=polling&sid=" + sid + b" HTTP/1.1\r\n"
            b"Host: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n4"
        )
        await writer.drain()
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        # The session is over: a poll with its sid is refused.
        status, _ = await poll(address, sid)
        assert status == b"HTTP/1.1 400 Bad Request"
    finally:
        writer.close()


async def open_polling_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Open an Engine.IO long-polling session on this connection; returns its sid."""
    writer.write(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return body.split(b'"sid":"')[1].split(b'"')[0]


async def poll(address: tuple[str, int], sid: bytes) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(
            b"GET /socket.io/?EIO=4&transport=polling&sid=" + sid + b" HTTP/1.1\r\n"
            b"Host: x\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await closed_by_server(reader)
        status, _, rest = answer.partition(b"\r\n")
        return status, rest
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 8200 + b"\r\n\r\n",
    ],
    ids=["cl-te", "cl-cl", "te-te", "long-header"],
)
async def test_malformed_http_is_answered_400_and_logged_at_info_in_one_line(
    address: tuple[str, int], caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    """V8: these were refused with 400 but logged at ERROR with a traceback."""
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request_bytes)
        await writer.drain()
        answer = await closed_by_server(reader)
        assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:200]
    finally:
        writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records
    ]
    assert not [r for r in caplog.records if r.exc_info]
    [line] = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert "\n" not in line.getMessage()


async def test_500_slow_connections_at_once_leave_healthy_requests_answered(
    settings: Settings,
) -> None:
    """Issue 15, item 5: slow requests are held (each costs a socket, no task of ours)
    while healthy requests are answered; then every slow one is closed."""
    async with running_app(settings.with_overrides(read_timeout_s=5)) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        slow = []
        for _ in range(500):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Le")
            slow.append((reader, writer))
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(20):
                    async with http.get(url + "/healthz") as response:
                        assert response.status == 200
                    async with http.post(
                        url + "/api/v1/events", json={"topic": "ok", "data": {}}
                    ) as response:
                        assert response.status == 202
            answers = await asyncio.gather(*[closed_by_server(r) for r, _ in slow])
            assert answers == [b""] * 500
        finally:
            for _, writer in slow:
                writer.close()


async def polling_handshake(url: str, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + "/socket.io/?EIO=4&transport=polling", headers=headers) as response,
    ):
        return response.status


async def test_forwarded_headers_count_only_from_trusted_proxies(settings: Settings) -> None:
    """Issue 15: `X-Forwarded-Host` made a foreign Origin count as same-origin (with the
    Admin UI on, and in the default same-origin mode alike: tests/test_origins.py)."""
    forged = {
        "Origin": "https://evil.example",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
    }
    async with running_app(settings) as url:
        assert await polling_handshake(url, forged) == 400
        host = urlsplit(url).netloc
        assert await polling_handshake(url, {"Origin": f"http://{host}"}) == 200
    trusted = settings.with_overrides(trusted_proxies=("127.0.0.0/8",))
    async with running_app(trusted) as url:
        assert await polling_handshake(url, forged) == 200  # the proxy vouches for it
