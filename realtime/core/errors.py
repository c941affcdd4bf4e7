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


def describe(error: Any) -> str:
    """One readable line for an error object (`{"code", "message", "fields"?}`), as the
    CLI and the Python client show it: `invalid: bad event (data: Not a valid mapping
    type.; 1.topic: Missing data for required field.)`."""
    if not isinstance(error, dict):
        return str(error)
    text = f"{error.get('code', 'error')}: {error.get('message', '')}".rstrip(": ")
    problems = [f"{path}: {problem}" for path, problem in _flatten(error.get("fields"))]
    return f"{text} ({'; '.join(problems)})" if problems else text


def _flatten(fields: Any, path: str = "") -> list[tuple[str, str]]:
    """marshmallow's nested field errors (dicts of lists, batch indexes) as (path, text)."""
    if isinstance(fields, dict):
        found: list[tuple[str, str]] = []
        for key, value in fields.items():
            found += _flatten(value, f"{path}.{key}" if path else str(key))
        return found
    if isinstance(fields, list) and all(isinstance(item, str) for item in fields):
        return [(path or "body", " ".join(fields))]
    if isinstance(fields, list):
        return [pair for item in fields for pair in _flatten(item, path)]
    return [] if fields is None else [(path or "body", str(fields))]
