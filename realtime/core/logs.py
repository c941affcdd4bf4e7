"""Logging for every process: plain or JSON lines, context fields, no secrets.

Not a step of the data path; it serves all of them. The CLI calls `setup(settings)` once.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, TextIO

from aiohttp.http_exceptions import HttpProcessingError

from realtime.core import jsoncodec
from realtime.core.settings import Settings

REDACTED = "***"

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("realtime_log_context", default=_EMPTY)

_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*:)[^@/\s]+(?=@)")
_QUERY_PASSWORD = re.compile(
    r"([?&](?:sentinel_password|password|pass|pwd)=)[^&#\s]+", re.IGNORECASE
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "context",
    "taskName",
}


# -- context ------------------------------------------------------------------------------


class log_context:
    """Add fields to every log line written inside the block (this task only).

    A class rather than a @contextmanager generator: it wraps every HTTP request."""

    __slots__ = ("fields", "token")

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        self.token: Token[Mapping[str, Any]] | None = None

    def __enter__(self) -> None:
        self.token = _CONTEXT.set({**_CONTEXT.get(), **self.fields})

    def __exit__(self, *exc: object) -> None:
        assert self.token is not None
        _CONTEXT.reset(self.token)


def bind(**fields: Any) -> None:
    """Add fields for the rest of this context: the process's, when called before the
    event loop starts (tasks copy the context they are created in)."""
    _CONTEXT.set({**_CONTEXT.get(), **fields})


def current_context() -> Mapping[str, Any]:
    return _CONTEXT.get()


class ContextFilter(logging.Filter):
    """Copies the current context onto each record written through the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = _CONTEXT.get()
        return True


# -- redaction ----------------------------------------------------------------------------


def redact_url(text: str) -> str:
    """`redis://user:secret@host` -> `redis://user:***@host`; also `?password=...`."""
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}", text)
    if "=" in text:
        text = _QUERY_PASSWORD.sub(rf"\g<1>{REDACTED}", text)
    return text


class Redactor:
    """Replaces known secret values and URL passwords in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return redact_url(text)


# -- formatters ---------------------------------------------------------------------------


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Context fields, then `extra=` fields of the record."""
    fields: dict[str, Any] = dict(getattr(record, "context", _EMPTY))
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            fields[key] = value
    return fields


class PlainFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return self.redactor(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; strings are redacted before encoding, so an escaped
    form of a secret cannot slip through."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        redact = self.redactor
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in _fields(record).items():
            line.setdefault(key, redact(value) if isinstance(value, str) else value)
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        try:
            return jsoncodec.dumps(line)
        except TypeError:  # an `extra=` value orjson cannot encode
            return jsoncodec.dumps({k: v if _plain(v) else redact(str(v)) for k, v in line.items()})


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


# -- malformed HTTP -----------------------------------------------------------------------


class MalformedHttpFilter(logging.Filter):
    """aiohttp logs a request it could not parse (CL+TE, a duplicate Content-Length, an
    over-long header line) on `aiohttp.server` at ERROR with a traceback, after it has
    answered 400. That is the client's mistake: one INFO line of ours instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        reason = " ".join(str(exc.message or exc).split())  # one line, whatever it holds
        logging.getLogger("realtime.http").info(
            "refused a malformed HTTP request from %s: %d %s", peer, exc.code, reason
        )
        return False


def quiet_malformed_http() -> None:
    """Install `MalformedHttpFilter` on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedHttpFilter) for f in server.filters):
        server.addFilter(MalformedHttpFilter())


# -- session ids --------------------------------------------------------------------------

# A session id as python-engineio makes them (Engine.IO's and Socket.IO's alike): 20
# base64url characters.
_SID = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{20}(?![A-Za-z0-9_-])")
SID_LOGGERS = ("engineio.server", "socketio.server", "aiohttp.access")


class SidFilter(logging.Filter):
    """python-engineio and python-socketio write session ids into their lines ("Invalid
    session <sid>", "<sid>: Received packet ..."), and aiohttp's access log (off in
    `realtime serve`, on in aiohttp's test server) writes URLs with `sid=`. An Engine.IO
    sid is a bearer secret (whoever holds it can poll that session): replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = _SID.sub("<sid>", message)
        if hidden != message:
            record.msg, record.args = hidden, ()
        return True


def hide_session_ids() -> None:
    """Install `SidFilter` on the loggers of `SID_LOGGERS` (once)."""
    for name in SID_LOGGERS:
        library = logging.getLogger(name)
        if not any(isinstance(f, SidFilter) for f in library.filters):
            library.addFilter(SidFilter())


# -- setup --------------------------------------------------------------------------------


# The project's own loggers: REALTIME_LOG_LEVEL sets these; every other library's logger
# (redis, aiohttp, socketio, ...) follows REALTIME_LIBRARY_LOG_LEVEL, WARNING by default, so
# a DEBUG of ours is not buried under a library's.
OWN_LOGGERS = ("realtime", "processors")


def _level(name: str, value: str) -> int:
    level = logging.getLevelName(value)
    if not isinstance(level, int):
        raise ValueError(f"{name}: unknown level {value!r}")
    return level


def setup(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Route every logger of the process through one handler on stderr (or `stream`).

    Raises ValueError for an unknown level. Python warnings and uncaught exceptions are
    logged too, so a JSON log stays JSON to its last line.
    """
    level = _level("REALTIME_LOG_LEVEL", settings.log_level)
    library_level = _level("REALTIME_LIBRARY_LOG_LEVEL", settings.library_log_level)
    redactor = Redactor(settings.secret_values())
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter(redactor) if settings.log_format == "json" else PlainFormatter(redactor)
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(library_level)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(True)
    quiet_malformed_http()
    hide_session_ids()
    sys.excepthook = _log_uncaught
    return handler


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("realtime").critical("uncaught exception", exc_info=(kind, exc, tb))
