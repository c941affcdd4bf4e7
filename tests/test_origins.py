"""Which page origins count as the server's own (realtime/web/admin.py): python-engineio's
same-origin rule, with X-Forwarded-Host and X-Forwarded-Proto believed from trusted
proxies only (the environ as realtime/transport/inbound.py translates it)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from engineio.async_drivers.aiohttp import translate_request

from realtime.core.peer import TrustedProxies
from realtime.core.settings import Settings
from realtime.transport.inbound import guard_translate_request
from realtime.web.admin import cors_allowed_origins, same_origins

pytestmark = pytest.mark.unit

FORGED = {
    "Host": "app.example",
    "Origin": "https://evil.example",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
}


def environ(headers: dict[str, str], peer: str) -> dict[str, Any]:
    request = make_mocked_request("GET", "/socket.io/?EIO=4", headers=headers)
    request = request.clone(remote=peer)
    translate = guard_translate_request(translate_request, 30.0, TrustedProxies(["10.0.0.0/8"]))
    translated: dict[str, Any] = translate(request)
    return translated


def test_forwarded_headers_from_anyone_are_ignored() -> None:
    found = same_origins(environ(FORGED, "203.0.113.9"), ())
    assert found == ["http://app.example", "https://app.example"]


def test_forwarded_headers_from_a_trusted_proxy_count() -> None:
    found = same_origins(environ(FORGED, "10.1.2.3"), ("10.0.0.0/8",))
    assert found == ["https://app.example", "https://evil.example"]


@pytest.mark.parametrize("admin", [False, True])
def test_a_foreign_origin_with_a_forged_forwarded_host_is_refused(admin: bool) -> None:
    settings = Settings(trusted_proxies=("10.0.0.0/8",))
    if admin:
        settings = settings.with_overrides(admin_user="admin", admin_password="p" * 16)
    allowed = cors_allowed_origins(settings)
    assert callable(allowed)
    assert not allowed("https://evil.example", environ(FORGED, "203.0.113.9"))
    assert allowed("https://evil.example", environ(FORGED, "10.9.9.9"))
    assert allowed("http://app.example", environ(FORGED, "203.0.113.9"))
    # The page's own host over TLS (behind any TLS-terminating proxy) is same-origin,
    # whoever sends X-Forwarded-Proto; another host never is.
    assert allowed("https://app.example", environ(FORGED, "203.0.113.9"))
    assert allowed("https://app.example", environ(FORGED, "10.9.9.9"))
    assert not allowed("https://app.example:8443", environ(FORGED, "203.0.113.9"))
    assert allowed(settings.admin_origin, environ(FORGED, "203.0.113.9")) is admin


def test_configured_origins_are_a_plain_list() -> None:
    settings = Settings(cors_origins=("https://a.example",))
    assert cors_allowed_origins(settings) == ["https://a.example"]


def test_a_refusal_behind_an_unlisted_proxy_names_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What an operator behind a TLS-terminating proxy it has not listed sees first."""
    allowed = cors_allowed_origins(Settings())
    assert callable(allowed)
    behind_proxy = {"Host": "app.example", "X-Forwarded-Host": "www.example"}
    with caplog.at_level(logging.INFO, logger="realtime.web.admin"):
        assert not allowed("https://www.example", environ(behind_proxy, "192.0.2.50"))
    assert "192.0.2.50" in caplog.text
    assert "REALTIME_TRUSTED_PROXIES" in caplog.text
