"""The environ python-socketio keeps per connection, packed (`realtime/transport/environ.py`):
a reader gets what it got before, the text entries of the translated request."""

from __future__ import annotations

from typing import Any

import pytest

from realtime.transport.environ import MAX_LAYOUTS, Environs, Packed

pytestmark = pytest.mark.unit


def translated(key: str = "k1", **headers: str) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "wsgi.input": object(),
        "wsgi.version": (1, 0),
        "wsgi.async": True,
        "aiohttp.request": object(),
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "EIO=4&transport=websocket",
        "PATH_INFO": "/socket.io/",
        "REMOTE_ADDR": "10.1.2.3",
        "HTTP_SEC_WEBSOCKET_KEY": key,
        "HTTP_COOKIE": "a=1; b=2",
        "HTTP_EMPTY": "",
    }
    environ.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    return environ


def text_of(environ: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in environ.items() if isinstance(v, str)}


def test_readers_get_the_text_entries_back() -> None:
    environs = Environs()
    environs["e1"] = translated()
    assert environs["e1"] == text_of(translated())
    assert environs.get("e1") == text_of(translated())
    assert list(environs["e1"]) == list(text_of(translated()))  # in the same order
    assert environs.get("e2") is None
    assert environs.get("e2", {}) == {}
    assert "e1" in environs
    assert "e2" not in environs
    with pytest.raises(KeyError):
        environs["e2"]
    del environs["e1"]
    assert "e1" not in environs


def test_a_reader_gets_its_own_copy() -> None:
    environs = Environs()
    environs["e1"] = translated()
    environs["e1"]["HTTP_X"] = "changed"
    assert "HTTP_X" not in environs["e1"]


def test_connections_with_the_same_headers_share_the_keys() -> None:
    environs = Environs()
    environs["e1"] = translated("k1")
    environs["e2"] = translated("k2")
    one, two = dict.__getitem__(environs, "e1"), dict.__getitem__(environs, "e2")
    assert isinstance(one, Packed)
    assert isinstance(two, Packed)
    assert one.keys is two.keys
    assert environs["e2"]["HTTP_SEC_WEBSOCKET_KEY"] == "k2"


def test_a_value_with_the_separator_is_kept_as_it_is() -> None:
    environs = Environs()
    environs["e1"] = translated(odd="a\x00b")
    assert environs["e1"]["HTTP_ODD"] == "a\x00b"
    assert environs["e1"] == text_of(translated(odd="a\x00b"))


def test_the_shared_key_sets_are_bounded() -> None:
    """Clients choose their header names: past the bound a connection keeps its own keys."""
    environs = Environs()
    for n in range(MAX_LAYOUTS + 10):
        environs[f"e{n}"] = translated(**{f"x{n}": "v"})
    assert len(environs._layouts) == MAX_LAYOUTS
    last = MAX_LAYOUTS + 9
    assert environs[f"e{last}"][f"HTTP_X{last}"] == "v"
