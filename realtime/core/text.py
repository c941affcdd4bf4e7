"""Text from Redis replies: redis-py hands back `bytes` (or `str` from tests and callers
that pass their own); every reader of a reply goes through `text`."""

from __future__ import annotations


def text(value: bytes | str, errors: str = "strict") -> str:
    """`value` as text, UTF-8 decoded; `errors="replace"` where any bytes must do (an
    error message that is shown, never parsed)."""
    return value.decode("utf-8", errors) if isinstance(value, bytes) else value
