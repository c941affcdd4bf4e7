"""Issue 15 item 7: an Engine.IO sid is a bearer secret, so a session takes requests only
from the client address that opened it (realtime/transport/engine.py). Raw HTTP from a
second loopback address (127.0.0.2) plays the thief; stock clients keep working
(python-socketio here; socket.io-client in tests/test_js_client.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from realtime.core import jsoncodec
from realtime.core.settings import Settings
from tests.helpers.clients import Collector
from tests.helpers.inprocess import running_app
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

OWNER = "127.0.0.1"
THIEF = "127.0.0.2"


@asynccontextmanager
async def http_from(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def polling(url: str, sid: str | None = None) -> str:
    query = "EIO=4&transport=polling" + (f"&sid={sid}" if sid else "")
    return f"{url}/socket.io/?{query}"


async def handshake(url: str, headers: dict[str, str] | None = None) -> str:
    async with http_from(OWNER) as http, http.get(polling(url), headers=headers) as response:
        assert response.status == 200
        body = await response.text()
    assert body[0] == "0"
    sid: str = jsoncodec.loads(body[1:])["sid"]
    return sid


async def post_connect(
    url: str, sid: str, source: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """POST a namespace CONNECT (`40`) into the session: what a thief would do first."""
    async with (
        http_from(source) as http,
        http.post(polling(url, sid), data="40", headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_a_stolen_sid_is_refused_from_another_address(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app(settings) as url:
        sid = await handshake(url)
        # The thief: a POST, a poll and a websocket upgrade, each "Invalid session".
        assert await post_connect(url, sid, THIEF) == (400, '"Invalid session"')
        async with http_from(THIEF) as http, http.get(polling(url, sid)) as response:
            assert response.status == 400
        ws_url = polling(url, sid).replace("transport=polling", "transport=websocket")
        async with http_from(THIEF) as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url)
            assert refused.value.status == 400
        # The owner still has the session: it connects, polls, and upgrades.
        assert await post_connect(url, sid, OWNER) == (200, "OK")
        async with http_from(OWNER) as http, http.get(polling(url, sid)) as response:
            assert response.status == 200
            assert (await response.text()).startswith("40")
        async with http_from(OWNER) as http, http.ws_connect(ws_url) as ws:
            await ws.send_str("2probe")
            assert (await asyncio.wait_for(ws.receive_str(), 10)) == "3probe"
    assert "refused a request for a session opened from another address" in caplog.text
    assert sid not in caplog.text  # never logged, not even refused


async def test_an_oversized_post_with_a_stolen_sid_does_not_end_the_session(
    settings: Settings,
) -> None:
    async with running_app(settings) as url:
        sid = await handshake(url)
        big = "4" + "x" * (settings.max_message_bytes + 10)
        async with (
            http_from(THIEF) as http,
            http.post(polling(url, sid), data=big) as response,
        ):
            assert response.status == 413
        assert await post_connect(url, sid, OWNER) == (200, "OK")


async def test_behind_a_trusted_proxy_the_forwarded_client_is_bound(settings: Settings) -> None:
    trusted = settings.with_overrides(trusted_proxies=(f"{OWNER}/32",))
    victim = {"X-Forwarded-For": "198.51.100.1"}
    async with running_app(trusted) as url:
        sid = await handshake(url, victim)
        # Another client behind the same proxy, and a forger who is not the proxy.
        other = {"X-Forwarded-For": "198.51.100.2"}
        assert (await post_connect(url, sid, OWNER, other))[0] == 400
        assert (await post_connect(url, sid, THIEF, victim))[0] == 400
        assert await post_connect(url, sid, OWNER, victim) == (200, "OK")


async def test_unbound_sessions_when_turned_off(settings: Settings) -> None:
    async with running_app(settings.with_overrides(bind_sessions=False)) as url:
        sid = await handshake(url)
        assert await post_connect(url, sid, THIEF) == (200, "OK")


async def test_a_stock_client_polls_and_upgrades(base_url: str) -> None:
    client = await Collector().connect(base_url, ["polling", "websocket"])
    try:
        ack = await client.call("subscribe", {"topic": "metrics.cpu"})
        assert ack["ok"] is True
        transport = client.client.eio
        await eventually(lambda: transport.current_transport == "websocket", "the upgrade")
    finally:
        await asyncio.wait_for(client.close(), 5)
