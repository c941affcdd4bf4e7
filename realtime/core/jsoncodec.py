"""JSON in and out through orjson, shaped like the `json` module python-socketio expects."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
JSONEncodeError = orjson.JSONEncodeError


def dumps(obj: Any, **_ignored: Any) -> str:
    """`json.dumps` signature; keyword options such as `separators` are orjson's defaults."""
    return orjson.dumps(obj).decode("utf-8")


def dumpb(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: str | bytes | bytearray | memoryview, **_ignored: Any) -> Any:
    return orjson.loads(data)
