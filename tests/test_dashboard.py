"""The browser-facing routes of the web process: `/` and the JS client helper."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from realtime.dashboard import STATIC_DIR
from realtime.settings import Settings
from tests.helpers.inprocess import running_app


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with running_app(settings) as url:
        yield url


async def test_js_client_helper_is_served(base_url: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(base_url + "/static/realtime-client.js") as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/javascript"
        body = await response.text()
    assert body == (STATIC_DIR / "realtime-client.js").read_text()
    assert "export class Subscriptions" in body
