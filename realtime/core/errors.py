"""The error shape every edge answers with: `{"error": {"code", "message", "fields"?}}`.

Codes are part of the wire contract; clients switch on them.
"""

from __future__ import annotations

from typing import Any

INVALID = "invalid"
INVALID_JSON = "invalid_json"
TOO_LARGE = "too_large"
UNAVAILABLE = "unavailable"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
LIMIT = "limit"
NOT_FOUND = "not_found"
INTERNAL = "internal"


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def error_ack(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Socket.IO acknowledgement for a refused request."""
    return {"ok": False, **error_body(code, message, fields)}
