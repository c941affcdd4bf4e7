"""python-socketio's AsyncServer, with the engine-level fixes this server relies on: the
Socket.IO side of step 5 (sending). It is delivery's one door to a connection
(`writer(sid)`), checks POST bodies before python-engineio parses them, closes clients
that send malformed packets or never join a namespace, and can drop a connection so the
client reconnects by itself.

The project's handlers come before those registered with python-socketio's API
(`realtime/transport/dispatch.py`).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

import engineio
import orjson
import socketio
from socketio import packet

from realtime.core.keys import NAMESPACE, SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT
from realtime.core.logs import log_context
from realtime.core.peer import TrustedProxies
from realtime.core.topics import is_valid_topic
from realtime.transport.dispatch import ExtensibleServer
from realtime.transport.engine import EngineServer, EngineSocket
from realtime.transport.environ import Environs
from realtime.transport.inbound import attachment_malformed, guard_translate_request, malformed
from realtime.transport.outbox import Outbox
from realtime.transport.timers import DelayQueue

logger = logging.getLogger(__name__)

_TOPIC_EVENTS = frozenset({SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT})
_BINARY_TYPES = (str(packet.BINARY_EVENT), str(packet.BINARY_ACK))


def _context_of(event: str, args: tuple[Any, ...]) -> dict[str, str]:
    fields: dict[str, str] = {}
    if args and isinstance(args[0], str):
        fields["client"] = args[0]
    if event in _TOPIC_EVENTS and len(args) > 1 and isinstance(args[1], dict):
        topic = args[1].get("topic")
        if isinstance(topic, str) and is_valid_topic(topic):
            fields["topic"] = topic  # only a valid name: no client junk in log lines
    return fields


class Traffic:
    """What crossed this server's connections so far, as plain integers: each count is
    one addition where the server already handles the thing counted (a connection, a
    received message, a delivery batch), so keeping them costs nothing measurable.

    `packets_out` and `bytes_out` count `update` packets (topic events) handed to
    connections, counted by `realtime.delivery.hub` once per batch and slice of a room
    on the fast path; acks, pings and other server packets are not counted. `bytes_out`
    is their Engine.IO message size (without websocket frame headers or HTTP).
    `packets_in` and `bytes_in` count the Socket.IO messages clients sent (connects,
    subscribe, unsubscribe, ...), not Engine.IO pings and pongs."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connections",
        "disconnections",
        "packets_in",
        "packets_out",
        "raw_connections",
        "raw_disconnections",
    )

    def __init__(self) -> None:
        self.raw_connections = 0  # Engine.IO connections opened
        self.raw_disconnections = 0
        self.connections = 0  # namespace connects accepted (any namespace)
        self.disconnections = 0
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0

    def sent(self, packets: int, size: int) -> None:
        """`packets` update packets of `size` bytes each were handed to connections."""
        self.packets_out += packets
        self.bytes_out += packets * size

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Packet(packet.Packet):  # type: ignore[misc]
    """python-socketio's packet, with a cheaper test for binary data: it walked every
    list and dict of a packet's data (functools.reduce over a list per level) on each
    packet made, ~110 us for a subscribe ack carrying 10 events, the largest single
    cost of a connect (`python -m bench.storm`). orjson refuses bytes and bytearray
    wherever they are, so data it encodes holds none; anything it refuses (bytes, a
    tuple, a key not a string, a huge int) gets python-socketio's own walk."""

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        try:
            orjson.dumps(data)
        except orjson.JSONEncodeError:
            return bool(packet.Packet.data_is_binary(data))
        return False


class Watcher(Protocol):
    """Told of what happens to connections, as it happens (the Admin UI's feed)."""

    def connected(self, sid: str, namespace: str) -> None: ...

    def disconnected(self, sid: str, namespace: str, reason: Any) -> None: ...

    def received(self, sid: str, namespace: str, event: str, topic: str | None) -> None: ...

    def upgraded(self, eio_sid: str) -> None: ...


class ConnectHook(Protocol):
    """Around the CONNECT answer of namespace `/` (connection-state recovery)."""

    def data(self, sid: str) -> dict[str, Any]:
        """What the answer carries besides the sid."""
        ...

    def sent(self, sid: str) -> None:
        """The answer went out (what follows it on the connection may be sent now)."""
        ...


ConnectCheck = Callable[[dict[str, Any], Any], Awaitable[dict[str, Any] | None]]


class SocketServer(ExtensibleServer):
    def __init__(
        self,
        *args: Any,
        admin_namespace: str | None = None,
        admin_only_origin: str | None = None,
        ws_compression: bool = False,
        backlog_bytes: int = EngineServer.backlog_bytes,
        backlog_packets: int = EngineServer.backlog_packets,
        connect_timeout_s: float = 45.0,
        read_timeout_s: float = 30.0,
        trusted_proxies: Sequence[str] = (),
        bind_sessions: bool = True,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("serializer", "default") == "default":
            kwargs["serializer"] = Packet
        super().__init__(*args, **kwargs)
        # python-socketio keeps each connection's environ while it lives: packed here.
        self.environ = Environs()
        self.connect_timeout_s = connect_timeout_s
        # Each new connection's check that it joined a namespace, on one timer.
        self._connect_checks: DelayQueue[str] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self.admin_namespace = admin_namespace
        self.admin_only_origin = admin_only_origin
        self.traffic = Traffic()
        self.watcher: Watcher | None = None
        self.connect_hook: ConnectHook | None = None
        # Per namespace: awaited with a CONNECT's environ and auth before python-socketio
        # registers the client (a client whose connect handler awaits is in the
        # namespace's rooms meanwhile, and gets its broadcasts); a dict refuses it (the
        # CONNECT_ERROR's data), None lets it on to the connect handler.
        self.connect_checks: dict[str, ConnectCheck] = {}
        self.eio.on_upgraded = self._upgraded
        self.eio.ws_compression = ws_compression
        self.eio.backlog_bytes = backlog_bytes
        self.eio.backlog_packets = backlog_packets
        proxies = TrustedProxies(trusted_proxies)
        self.eio.proxies = proxies
        self.eio.bind_sessions = bind_sessions
        # An instance attribute of the engine: its aiohttp driver's, with POST bodies
        # checked (websocket messages are checked by `EngineSocket`).
        drivers = self.eio._async
        self.eio._async = {
            **drivers,
            "translate_request": guard_translate_request(
                drivers["translate_request"], read_timeout_s, proxies
            ),
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

    def start_manager(self) -> None:
        """Start the client manager (its fan-out listener) if it has not started: on the
        first connection, Engine.IO or SSE (`realtime.web.stream`)."""
        if not self.manager_initialized:  # type: ignore[has-type]
            # The manager starts its listener task here; it outlives this request, so it
            # must not inherit the request's log context (request id, client).
            self.manager_initialized = True
            contextvars.Context().run(self.manager.initialize)

    def _engineio_server_class(self) -> type[EngineServer]:
        return EngineServer

    async def _trigger_event(self, event: str, namespace: str, *args: Any) -> Any:
        fields = _context_of(event, args)
        with log_context(**fields):
            if event == "connect":
                self._check_origin(namespace, args)
            result = await self._dispatch(event, namespace, args)
            watcher = self.watcher
            if event == "connect":
                outcome = "refused" if result is False else "accepted"
                logger.debug("connect to %s %s", namespace, outcome)
                if result is not False:
                    self.traffic.connections += 1
                    if watcher is not None:
                        watcher.connected(args[0], namespace)
            elif event == "disconnect":
                logger.debug("disconnected from %s", namespace)
                self.traffic.disconnections += 1
                if watcher is not None:
                    watcher.disconnected(args[0], namespace, args[1] if len(args) > 1 else None)
            else:
                if event in _TOPIC_EVENTS:
                    logger.debug("%s answered %s", event, result)
                if watcher is not None and args:
                    watcher.received(args[0], namespace, event, fields.get("topic"))
            return result

    def _upgraded(self, eio_sid: str) -> None:
        if self.watcher is not None:
            self.watcher.upgraded(eio_sid)

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
        self.traffic.raw_connections += 1
        self.start_manager()
        if self._connect_checks is None or self._connect_checks.delay != self.connect_timeout_s:
            self._connect_checks = DelayQueue(self.connect_timeout_s, self._spawn_connect_check)
        self._connect_checks.add(eio_sid)
        await super()._handle_eio_connect(eio_sid, environ)

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
        self.traffic.packets_in += 1
        if isinstance(data, (str, bytes)):
            self.traffic.bytes_in += len(data)
        binary = self._binary_packet.get(eio_sid)
        if binary is None:
            problem = malformed(data, self.packet_class)
            if problem is None and data[:1] in _BINARY_TYPES:
                problem = self._binary_unexpected(eio_sid, data)
        else:  # the next attachment of a binary packet
            received = sum(len(a) for a in binary.attachments)
            problem = attachment_malformed(data, received, self.eio.max_http_buffer_size)
        if problem is not None:
            logger.info("closing a connection that sent a malformed packet: %s", problem)
            self._binary_packet.pop(eio_sid, None)
            await self._close_engine(eio_sid)
            return
        await super()._handle_eio_message(eio_sid, data)

    def _binary_unexpected(self, eio_sid: str, data: str) -> str | None:
        # python-socketio raises on a binary packet for a namespace not connected.
        namespace = self.packet_class(encoded_packet=data).namespace or NAMESPACE
        if self.manager.sid_from_eio_sid(eio_sid, namespace) is None:
            return f"a binary packet for {namespace[:64]!r}, which is not connected"
        return None

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        # Socket.IO v5: a CONNECT_ERROR carries an object; python-socketio sends the bare
        # string "Unable to connect" for a namespace nobody serves.
        namespace = namespace or "/"
        if not self._serves(namespace):
            refusal = {"message": "Invalid namespace"}
            await self._send_packet(
                eio_sid,
                self.packet_class(packet.CONNECT_ERROR, data=refusal, namespace=namespace),
            )
            return
        check = self.connect_checks.get(namespace)
        refused = None if check is None else await check(self.environ.get(eio_sid, {}), data)
        if refused is not None:
            await self._send_packet(
                eio_sid,
                self.packet_class(packet.CONNECT_ERROR, data=refused, namespace=namespace),
            )
            return
        await super()._handle_connect(eio_sid, namespace, data)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        hook = self.connect_hook
        if (
            hook is None
            or pkt.packet_type != packet.CONNECT
            or (pkt.namespace or NAMESPACE) != NAMESPACE
            or not isinstance(pkt.data, dict)
            or "sid" not in pkt.data
        ):
            await super()._send_packet(eio_sid, pkt)
            return
        sid = pkt.data["sid"]
        pkt.data = {**pkt.data, **hook.data(sid)}
        await super()._send_packet(eio_sid, pkt)
        hook.sent(sid)

    def _serves(self, namespace: str) -> bool:
        return (
            namespace in self.first
            or namespace in self.handlers
            or namespace in self.namespace_handlers
            or self.namespaces == "*"
            or namespace in (self.namespaces or ())
        )

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
        self.traffic.raw_disconnections += 1
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
