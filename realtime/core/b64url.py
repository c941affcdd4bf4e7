"""Unpadded base64url (RFC 4648 section 5, no `=`): how JWS token segments and our page
cursors are written. One copy of the re-padding the standard library needs."""

from __future__ import annotations

import base64


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode(text: str) -> bytes:
    """`text`'s bytes; a ValueError (binascii.Error is one) when it is not base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
