"""Unpadded base64url, shared by JWS segments and page cursors."""

from __future__ import annotations

import base64

import pytest

from realtime.core import b64url

pytestmark = pytest.mark.unit


def test_it_writes_no_padding_and_reads_what_it_wrote() -> None:
    for size in range(7):
        data = bytes(range(250, 250 - size, -1))  # bytes that use '-' and '_'
        text = b64url.encode(data)
        assert "=" not in text
        assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")
        assert b64url.decode(text) == data


@pytest.mark.parametrize("bad", ["a", "ab!c", "é"])
def test_what_is_not_base64url_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match=r"padding|base64|ASCII"):
        b64url.decode(bad)
