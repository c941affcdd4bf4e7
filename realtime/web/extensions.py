"""Extensions (`REALTIME_EXTENSIONS=pkg.module:setup,...`): your own Socket.IO events,
namespaces and HTTP routes in the web process, around the data path.

At start, before serving, each `setup(sio, app)` is imported and called with the
python-socketio server and the aiohttp application; it registers handlers with
python-socketio's API (`sio.on`, `@sio.event`, `sio.register_namespace`) and routes
with aiohttp's. The project's own handling comes first (realtime/web/namespace.py,
`SocketServer.register_first`): auth and limits on connect, `subscribe`/`unsubscribe`.
`app[REALTIME]` (`Realtime`) is what an extension may do with the data path: publish
into topics as HTTP ingest does, and check a token's topics. Guide: docs/extensions.md.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web

from realtime.core import errors
from realtime.core.keys import SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT
from realtime.ingest.api import IngestHandler, IngestWriter, Refused
from realtime.transport.server import SocketServer
from realtime.web.access import Access
from realtime.web.admin import ADMIN_NAMESPACE
from realtime.web.auth import AuthError, Grant
from realtime.web.namespace import TopicNamespace

logger = logging.getLogger(__name__)

Setup = Callable[[socketio.AsyncServer, web.Application], None]
# Events of `/` that stay the project's: a handler an extension registers for them is an error.
OWN_EVENTS = frozenset({SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT})
CLAIMS = "claims"  # the session key of the token's claims (`await sio.get_session(sid)`)


class ExtensionError(ValueError):
    """An extension cannot be loaded or set up; the message is one line for the operator."""


@dataclass(frozen=True)
class Extension:
    name: str  # as configured: pkg.module:callable
    setup: Setup


def parse(spec: str) -> tuple[str, str]:
    """`pkg.module:callable` as its module and attribute path; ExtensionError if not."""
    module, sep, attribute = spec.partition(":")
    parts = [*module.split("."), *attribute.split(".")]
    if not sep or not all(part.isidentifier() for part in parts):
        raise ExtensionError(
            f"REALTIME_EXTENSIONS: {spec!r} is not of the form pkg.module:callable"
        )
    return module, attribute


def load(specs: tuple[str, ...]) -> list[Extension]:
    """Import each extension's callable. The working directory is importable, as for
    uvicorn and gunicorn (`realtime serve` is a console script: it would not be)."""
    if specs and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    extensions = []
    for spec in specs:
        module_name, attribute = parse(spec)
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as exc:  # the extension's own import-time failure, too
            raise ExtensionError(
                f"REALTIME_EXTENSIONS: cannot import {module_name}: {type(exc).__name__}: {exc}"
            ) from exc
        for name in attribute.split("."):
            if not hasattr(target, name):
                raise ExtensionError(f"REALTIME_EXTENSIONS: {module_name} has no {attribute}")
            target = getattr(target, name)
        if not callable(target):
            raise ExtensionError(f"REALTIME_EXTENSIONS: {spec} is not callable")
        extensions.append(Extension(spec, target))
    return extensions


class Realtime:
    """What an extension may do with the data path: `app[REALTIME]`."""

    def __init__(self, writer: IngestWriter, ingest: IngestHandler, access: Access) -> None:
        self._writer = writer
        self._ingest = ingest
        self._access = access

    async def publish(
        self, topic: str, data: Mapping[str, Any], *, ts: int | None = None, key: str | None = None
    ) -> str:
        """Append one event to the topic's ingest stream, checked as `POST /api/v1/events`
        checks it (PublishError: `code`, `fields`); its ingest id once Redis has it.
        The worker then writes it into the topic's history and to its subscribers."""
        event: dict[str, Any] = {"topic": topic, "data": data}
        if ts is not None:
            event["ts"] = ts
        if key is not None:
            event["key"] = key
        try:
            events = self._ingest.validate(event)
        except Refused as refused:
            raise PublishError(refused.code, str(refused), refused.fields) from None
        [ingest_id] = await self._writer.append(events)
        return ingest_id

    def allows(self, claims: Mapping[str, Any], topic: str) -> bool:
        """Whether a token with these `claims` (the session's `claims`) may subscribe to
        `topic`, as `subscribe` decides it; every topic with auth off."""
        if self._access.verifier is None:
            return True
        try:
            return Grant.of(claims).allows(topic)
        except AuthError:
            return False


class PublishError(ValueError):
    """`Realtime.publish` refused the event: `code` (`invalid`, `too_large`) and the
    field errors, as HTTP ingest would answer them."""

    def __init__(self, code: str, message: str, fields: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields

    def ack(self) -> dict[str, Any]:
        """The error ack a Socket.IO event answers with."""
        return errors.error_ack(self.code, str(self), self.fields)


REALTIME = web.AppKey("realtime", Realtime)


class Gate:
    """The connect of a namespace an extension added: the connection limit and the token
    are checked first (a refusal is the client's `connect_error`), its claims go into the
    session. Its events count towards the client's event rate."""

    def __init__(self, sio: SocketServer, access: Access) -> None:
        self.sio = sio
        self.access = access

    async def __call__(self, namespace: str, sid: str, environ: Any, auth: Any) -> None:
        if namespace == ADMIN_NAMESPACE:
            return  # the Admin UI's own login (realtime/web/admin.py)
        grant = self.access.join(sid, namespace, auth)  # raises ConnectionRefusedError
        await self.sio.save_session(sid, {CLAIMS: dict(grant.claims)}, namespace)

    def left(self, namespace: str, sid: str) -> None:
        self.access.left(sid, namespace)

    def check(self, namespace: str, sid: str, event: str) -> dict[str, Any] | None:
        return self.access.check_event(sid, namespace, event)


def install(
    extensions: list[Extension],
    sio: SocketServer,
    app: web.Application,
    topics: TopicNamespace,
) -> None:
    """Call each extension's setup, in order; ExtensionError when one fails or takes
    what stays the project's."""
    if not extensions:
        return
    topics.extended = True
    sio.gate = Gate(sio, topics.access)
    for extension in extensions:
        try:
            extension.setup(sio, app)
        except Exception as exc:
            raise ExtensionError(
                f"REALTIME_EXTENSIONS: {extension.name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        taken = OWN_EVENTS & set(sio.handlers.get(topics.namespace, {}))
        if taken:
            raise ExtensionError(
                f"REALTIME_EXTENSIONS: {extension.name} registers {', '.join(sorted(taken))} "
                f"on {topics.namespace}, which stay the server's own"
            )
        logger.info("extension %s set up", extension.name)
