"""The browser-facing routes of the web process: `/` and the JS client helper."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from realtime.core.settings import Settings
from realtime.web.dashboard import STATIC_DIR
from tests.helpers.inprocess import running_app

pytestmark = pytest.mark.integration


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


async def test_without_a_build_the_page_says_how_to_build_the_dashboard(
    settings: Settings, tmp_path: Path
) -> None:
    unbuilt = settings.with_overrides(dashboard_dir=str(tmp_path / "nothing-here"))
    async with running_app(unbuilt) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/") as response:
            assert response.status == 200
            page = await response.text()
        assert "The dashboard is not built" in page
        assert "make dashboard" in page
        assert "npm ci &amp;&amp; npm run build" in page
        async with http.get(url + "/assets/index-abc.js") as response:
            assert response.status == 404


async def test_a_build_is_served_with_its_assets(settings: Settings, tmp_path: Path) -> None:
    """Looked up per request: a build made while the server runs is served at once."""
    built = tmp_path / "dist"
    async with running_app(settings.with_overrides(dashboard_dir=str(built))) as url:
        (built / "assets").mkdir(parents=True)
        (built / "index.html").write_text('<script src="/assets/index-1a2b.js"></script>')
        (built / "assets" / "index-1a2b.js").write_text("console.log(1)")
        (tmp_path / "secret.txt").write_text("no")
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/") as response:
                assert response.status == 200
                assert "/assets/index-1a2b.js" in await response.text()
                assert response.headers["Cache-Control"] == "no-cache"
            async with http.get(url + "/assets/index-1a2b.js") as response:
                assert response.status == 200
                assert "immutable" in response.headers["Cache-Control"]
            for sneaky in ("/assets/..%2F..%2Fsecret.txt", "/assets/%2E%2E/secret.txt"):
                async with http.get(url + sneaky) as response:
                    assert response.status == 404, sneaky
