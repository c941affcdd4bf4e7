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
TIMEOUT = "timeout"

# What each code means, for the generated reference (docs/reference/errors.md, written by
# `python -m docs.gen`); a code without an entry fails tests/test_docs.py.
MEANINGS: dict[str, str] = {
    INVALID: "the request or payload is malformed or fails validation (HTTP 400 with `fields`; "
    "a refused `subscribe`/`unsubscribe` or an unknown event)",
    INVALID_JSON: "the ingest body is not JSON (HTTP 400), including JSON nested deeper than "
    "1024 levels",
    TOO_LARGE: "over a size limit: the ingest body, the batch length or one event's `data` "
    "(HTTP 413; `fields` names the events)",
    UNAVAILABLE: "Redis cannot be used right now, or fewer replicas than `REALTIME_WAIT_REPLICAS` "
    "confirmed in time (HTTP 503 + `Retry-After`, nothing stored); on a subscribe: history "
    "cannot be read now, subscribe again shortly",
    UNAUTHORIZED: "no or bad credentials: a missing or invalid publish key (HTTP 401 + "
    "`WWW-Authenticate: Bearer`), or a refused JWT (`connect_error` `data.code`)",
    FORBIDDEN: "the credentials do not allow this topic: a publish key's patterns (HTTP 403), "
    "a token's `topics` claim (subscribe ack)",
    LIMIT: "over a rate or count limit: the ingest rate per key (HTTP 429 + `Retry-After`), "
    "subscriptions or subscribe rate per connection (ack), connections per instance "
    "(`connect_error`); wait and retry",
    NOT_FOUND: "no such resource (HTTP 404), e.g. the public `/metrics` with no admin "
    "credentials configured",
    INTERNAL: "a bug on the server (HTTP 500, or a subscribe/unsubscribe ack); the body "
    "carries no traceback",
    TIMEOUT: "the ingest body did not all arrive within `REALTIME_READ_TIMEOUT_S` (HTTP 408, "
    "the connection is closed; nothing stored)",
}


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
