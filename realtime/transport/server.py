"""python-socketio's AsyncServer, with the engine-level fixes this server relies on.

- A long-polling client that disconnects sends a CLOSE packet in a POST while its last
  GET is still waiting. python-engineio closes the socket without answering that GET, so
  the request hangs until the ping timeout (the client's `disconnect()` waits for it, and
  a server shutdown waits for it too). We answer it at once with an empty payload.
- Every handler runs with the client's id (and the topic of a subscribe/unsubscribe) in
  its log context, so anything it logs says which client and topic it was about.
- An origin allowed only for the Admin UI (`realtime.web.admin`) may open `/admin` and no
  other namespace.
- A connection that has not connected to a namespace within `connect_timeout_s` is
  closed (socket.io's own server does the same; python-socketio does not).
- A malformed packet from a client (`realtime.transport.inbound`) closes that client's connection
  instead of raising inside python-socketio.
- `drop(sid)` ends a connection the way a network failure would (no close packet), so
  that the client's own reconnection takes over: socket.io clients do not reconnect
  after a server-side disconnect.
- Delivery reaches a connection only through `writer(sid)`.
- POST bodies are checked before python-engineio parses them (`guard_translate_request`).
- The Engine.IO server underneath is `realtime.transport.engine.EngineServer` (websocket
  connections write through an outbox, no task per packet), with permessage-deflate and
  each connection's backlog bound as configured.
- python-socketio keeps each connection's WSGI-style environ for as long as it lives;
  only its text entries are kept (the rest holds aiohttp's whole request).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

import engineio
import socketio

from realtime.core.keys import NAMESPACE, SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT
from realtime.core.logs import log_context
from realtime.core.topics import is_valid_topic
from realtime.transport.engine import EngineServer, EngineSocket
from realtime.transport.inbound import guard_translate_request, malformed
from realtime.transport.outbox import Outbox

logger = logging.getLogger(__name__)

_TOPIC_EVENTS = frozenset({SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT})


def _context_of(event: str, args: tuple[Any, ...]) -> dict[str, str]:
    fields: dict[str, str] = {}
    if args and isinstance(args[0], str):
        fields["client"] = args[0]
    if event in _TOPIC_EVENTS and len(args) > 1 and isinstance(args[1], dict):
        topic = args[1].get("topic")
        if isinstance(topic, str) and is_valid_topic(topic):
            fields["topic"] = topic  # only a valid name: no client junk in log lines
    return fields


class SocketServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(
        self,
        *args: Any,
        admin_namespace: str | None = None,
        admin_only_origin: str | None = None,
        ws_compression: bool = False,
        backlog_bytes: int = EngineServer.backlog_bytes,
        backlog_packets: int = EngineServer.backlog_packets,
        connect_timeout_s: float = 45.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout_s = connect_timeout_s
        self._checks: set[asyncio.Task[None]] = set()
        self.admin_namespace = admin_namespace
        self.admin_only_origin = admin_only_origin
        self.eio.ws_compression = ws_compression
        self.eio.backlog_bytes = backlog_bytes
        self.eio.backlog_packets = backlog_packets
        # An instance attribute of the engine: its aiohttp driver's, with POST bodies
        # checked (websocket messages are checked by `EngineSocket`).
        drivers = self.eio._async
        self.eio._async = {
            **drivers,
            "translate_request": guard_translate_request(drivers["translate_request"]),
        }

    def writer(self, sid: str, eio_sid: str | None = None) -> EngineSocket | None:
        """The one door to a connection for delivery: where `sid`'s packets go (its
        Engine.IO socket, `eio_sid` when the caller knows it), or None if it is gone."""
        if eio_sid is None:
            eio_sid = self.manager.eio_sid_from_sid(sid, NAMESPACE)
            if eio_sid is None:
                return None
        socket = self.eio.sockets.get(eio_sid)
        return socket if isinstance(socket, EngineSocket) else None

    def _engineio_server_class(self) -> type[EngineServer]:
        return EngineServer

    async def _trigger_event(self, event: str, namespace: str, *args: Any) -> Any:
        with log_context(**_context_of(event, args)):
            if event == "connect":
                self._check_origin(namespace, args)
            result = await super()._trigger_event(event, namespace, *args)
            if event == "connect":
                outcome = "refused" if result is False else "accepted"
                logger.debug("connect to %s %s", namespace, outcome)
            elif event == "disconnect":
                logger.debug("disconnected from %s", namespace)
            elif event in _TOPIC_EVENTS:
                logger.debug("%s answered %s", event, result)
            return result

    def _check_origin(self, namespace: str, args: tuple[Any, ...]) -> None:
        if self.admin_only_origin is None or namespace == self.admin_namespace:
            return
        environ = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        if environ.get("HTTP_ORIGIN") == self.admin_only_origin:
            logger.info(
                "refused %s: origin %s may open only %s",
                namespace,
                self.admin_only_origin,
                self.admin_namespace,
            )
            raise socketio.exceptions.ConnectionRefusedError("origin not allowed")

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        if not self.manager_initialized:  # type: ignore[has-type]
            # The manager starts its listener task here; it outlives this request, so it
            # must not inherit the request's log context (request id, client).
            self.manager_initialized = True
            contextvars.Context().run(self.manager.initialize)
        asyncio.get_running_loop().call_later(
            self.connect_timeout_s, self._spawn_connect_check, eio_sid
        )
        await super()._handle_eio_connect(eio_sid, environ)
        # python-socketio keeps the environ for as long as the connection lives, for its
        # namespace connects; they read its text entries (headers, query string) only.
        # The rest holds aiohttp's whole request (parsed headers, protocol, parser).
        self.environ[eio_sid] = {k: v for k, v in environ.items() if isinstance(v, str)}

    def _spawn_connect_check(self, eio_sid: str) -> None:
        if eio_sid in self.eio.sockets and not self._in_a_namespace(eio_sid):
            task = asyncio.ensure_future(self._connect_timed_out(eio_sid))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    def _in_a_namespace(self, eio_sid: str) -> bool:
        return any(self.manager.sid_from_eio_sid(eio_sid, ns) for ns in list(self.manager.rooms))

    async def _connect_timed_out(self, eio_sid: str) -> None:
        # socket.io's connectTimeout: a connection that never joins a namespace holds
        # server memory and is counted by no limit; it gets connect_timeout_s to do so.
        logger.info("closing a connection that joined no namespace in %gs", self.connect_timeout_s)
        await self._close_engine(eio_sid)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        problem = malformed(data, self.packet_class)
        if problem is not None:
            logger.info("closing a connection that sent a malformed packet: %s", problem)
            await self._close_engine(eio_sid)
            return
        await super()._handle_eio_message(eio_sid, data)

    async def _close_engine(self, eio_sid: str) -> None:
        """Close a connection with a CLOSE packet, without waiting for the client to read
        it (`eio.disconnect` waits, and a long-polling client that stopped polling would
        hold the request that sent the bad packet until its ping timeout)."""
        socket = self.eio.sockets.pop(eio_sid, None)
        if socket is not None:
            await socket.close(wait=False, reason=self.eio.reason.SERVER_DISCONNECT)

    async def drop(self, sid: str, namespace: str) -> None:
        """Close the client's transport without a close packet: it reconnects by itself."""
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace)
        if eio_sid is not None:
            await self.drop_connection(eio_sid)

    async def drop_connection(self, eio_sid: str) -> bool:
        """`drop` for an Engine.IO session (all its namespaces); False if it was gone."""
        socket = self.eio.sockets.get(eio_sid)
        if not isinstance(socket, EngineSocket):
            return False
        was_open = not (socket.closing or socket.closed)
        await socket.close(wait=False, abort=True)
        socket.end_transport()
        return was_open

    def open_connections(self) -> list[str]:
        """The Engine.IO sessions not closed or closing."""
        return [
            eio_sid
            for eio_sid, socket in list(self.eio.sockets.items())
            if not (socket.closing or socket.closed)
        ]

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        if reason == engineio.AsyncServer.reason.CLIENT_DISCONNECT:
            socket = self.eio.sockets.get(eio_sid)
            if isinstance(socket, EngineSocket) and not socket.upgraded:
                socket.end_transport()  # ends a pending long-poll GET

    # -- what the metrics read at scrape time -----------------------------------------

    def connected(self, namespace: str) -> int:
        """Connections to `namespace` (its `None` room holds every connected sid)."""
        return len(self.manager.rooms.get(namespace, {}).get(None, {}))

    def backlogs(self) -> Iterator[int]:
        """Each open websocket connection's outgoing backlog: bytes not yet written to
        the network (a long-polling connection holds at most one poll's worth)."""
        for socket in list(self.eio.sockets.values()):
            outbox = socket.outbox if isinstance(socket, EngineSocket) else None
            if isinstance(outbox, Outbox) and not socket.closed:
                yield outbox.backlog_bytes()
