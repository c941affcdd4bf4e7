"""Engine.IO, as python-engineio does it, with a leaner websocket path: step 5 of the data
path (sending). `EngineSocket` sends through an outbox whatever its transport: the
websocket's `Outbox` (frames written straight to the socket) or `PollingOutbox`
(engineio's queue, for long-polling). Why: docs/architecture.md.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import engineio
from aiohttp import WSMsgType, web
from engineio import exceptions, packet
from engineio.async_socket import AsyncSocket

from realtime.core import jsoncodec
from realtime.core.peer import TrustedProxies, same_network
from realtime.transport.connection import take_over
from realtime.transport.frames import Frame
from realtime.transport.inbound import engine_malformed
from realtime.transport.outbox import Outbox
from realtime.transport.timers import DelayQueue
from realtime.transport.websocket import CLOSE_NORMAL, CLOSE_UNSUPPORTED_DATA, HandshakeError

logger = logging.getLogger(__name__)

_AWAIT_PROBE = 1
_AWAIT_UPGRADE = 2


class PollingOutbox:
    """`Outbox`'s interface over engineio's packet queue: a long-polling connection (or
    one not yet upgraded) sends through it; a poll GET takes what it holds."""

    polling = True
    lane: asyncio.Transport | None = None  # never written to directly

    def __init__(self, socket: EngineSocket) -> None:
        self.socket = socket

    def write(self, frame: Frame) -> None:
        self.socket.queue.put_nowait(packet.Packet(packet.MESSAGE, data=frame.packet))

    def send_packet(self, pkt: packet.Packet) -> None:
        self.socket.queue.put_nowait(pkt)

    def full(self) -> bool:
        return bool(self.socket.queue.qsize() >= self.socket.server.backlog_packets)

    def notify_drained(self, callback: Callable[[], None]) -> None:
        if self.socket.queue.empty():
            asyncio.get_running_loop().call_soon(callback)
        else:
            self.socket._on_polled = callback

    def closed(self) -> None:
        """engineio's close has queued the CLOSE packet: the next poll takes it."""

    def end(self) -> None:
        # A pending poll GET is answered with a noop, as Engine.IO v4 servers answer it
        # when the session ends; the session is gone, so the next request is a 400.
        self.socket.queue.put_nowait(packet.Packet(packet.NOOP))
        self.socket.queue.put_nowait(None)

    def abandon_with_close(self, last: list[Frame]) -> None:
        queue = self.socket.queue
        while not queue.empty():
            queue.get_nowait()
            queue.task_done()
        for frame in last:
            self.write(frame)
        queue.put_nowait(packet.Packet(packet.CLOSE))


class EngineSocket(AsyncSocket):  # type: ignore[misc]
    """One Engine.IO connection. Defaults live on the class: engineio constructs the
    object as an `AsyncSocket` and `EngineServer` adopts it."""

    last_ping: float | None
    queue: Any  # asyncio.Queue; None once the connection is on the websocket
    connected: bool
    # Where packets go: engineio's queue (PollingOutbox), set on adoption, then the
    # websocket's Outbox once the connection is on it.
    outbox: Outbox | PollingOutbox
    link: Any = None  # the websocket: a WebSocketConnection, or aiohttp's with deflate
    opened_at = 0.0  # time.time() when the connection was opened (set on adoption)
    # The client address that opened the session (`realtime.core.peer`; set on adoption):
    # its later requests must come from there (`EngineServer.session_for`).
    address = ""
    _ping_entry: list[object] | None = None  # in the server's ping queue
    _on_polled: Any = None
    _inbox: list[str | bytes | None] | None = None  # received, not handled yet
    _receiving: asyncio.Task[None] | None = None  # handles the inbox while it is not empty
    _deaf = False  # the websocket is closing: what it still reads is dropped
    _probing = 0  # the upgrade dance's step (_AWAIT_PROBE, _AWAIT_UPGRADE)
    _next_outbox: Outbox | None = None  # the websocket's, once the upgrade is done

    def adopted(self, address: str) -> None:
        """Just made an EngineSocket: every attribute of ours set now, always in this
        order. CPython's instance dicts share their keys while every instance adds the
        same keys in the same order; ours added as they came (`_receiving` on the first
        message, say) gave each connection's dict a table of its own, 768 bytes
        (tracemalloc, `python -m bench.idle_heap`)."""
        self.outbox = PollingOutbox(self)
        self.opened_at = time.time()
        self.address = address
        self.link = None
        self._ping_entry = None
        self._on_polled = None
        self._inbox = None
        self._receiving = None
        self._deaf = False
        self._probing = 0
        self._next_outbox = None

    # -- sending: through the outbox, whatever the transport ---------------------------

    def push(self, frame: Frame) -> None:
        """Hand an `update` frame to this connection, whatever its transport."""
        if not (self.closing or self.closed):
            self.outbox.write(frame)

    def direct(self) -> asyncio.Transport | None:
        """See `Outbox.lane`: where an `update` frame may be written at once."""
        return None if self.closing or self.closed else self.outbox.lane

    def backlog_full(self) -> bool:
        return self.outbox.full()

    def notify_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when the backlog has been handed to the client."""
        self.outbox.notify_drained(callback)

    def _put(self, pkt: packet.Packet) -> None:
        self.outbox.send_packet(pkt)

    async def send(self, pkt: packet.Packet) -> None:
        if not await self.check_ping_timeout():
            return
        self._put(pkt)

    async def poll(self) -> list[packet.Packet]:
        packets: list[packet.Packet] = await super().poll()
        if self._on_polled is not None and self.queue.empty():
            callback, self._on_polled = self._on_polled, None
            asyncio.get_running_loop().call_soon(callback)
        return packets

    # -- pings: one queue for the server, not a timer (or a task) per connection --------

    def schedule_ping(self) -> None:
        if self.last_ping:
            self.last_ping = None
            self._ping_entry = self.server.ping_queue().add(self)

    def _ping(self) -> None:
        self._ping_entry = None
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self._put(packet.Packet(packet.PING))

    # -- ending -------------------------------------------------------------------------

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        if self._ping_entry is not None:
            DelayQueue.cancel(self._ping_entry)
            self._ping_entry = None
        await super().close(wait=wait and self.outbox.polling, abort=abort, reason=reason)
        self.outbox.closed()

    def end_transport(self) -> None:
        """End the websocket, or answer a pending long-poll GET, without a close packet."""
        self.outbox.end()

    def abandon(self, last: list[Frame]) -> None:
        """Cut a connection off: drop its backlog, send the messages `last` and the
        Engine.IO close, and end the transport."""
        self.outbox.abandon_with_close(last)

    # -- the websocket transport --------------------------------------------------------

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> web.StreamResponse:
        """engineio's websocket request (a new connection, or a polling one upgrading)."""
        if self.upgraded:
            raise OSError("Socket has been upgraded already")
        request: web.Request = environ["aiohttp.request"]
        offers_deflate = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "")
        if self.server.ws_compression and offers_deflate:
            return await self._serve_deflate_websocket(request)
        try:
            response, connection = await take_over(request, self, self.server.max_http_buffer_size)
        except HandshakeError as exc:
            if not self.connected:
                await self.close(wait=False, abort=True)
            return web.Response(status=400, text=f"Bad websocket handshake: {exc}")
        except ConnectionResetError:
            # The client left before its answer (one that gave up waiting, in a connect
            # storm): not our error, and a traceback per client cost the storm's CPU.
            if not self.connected:
                await self.close(wait=False, abort=True)
            return web.Response(status=400, text="The connection closed during the handshake.")
        outbox = Outbox(
            connection,
            connection.transport,
            connection,
            max_bytes=self.server.backlog_bytes,
            max_packets=self.server.backlog_packets,
        )
        self._attach(connection, outbox)
        return response

    async def _serve_deflate_websocket(self, request: web.Request) -> web.StreamResponse:
        """With permessage-deflate, aiohttp's websocket, read by this handler for as long
        as the connection lives (it keeps per-connection zlib state anyway)."""
        response = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=True
        )
        try:
            await response.prepare(request)
        except ConnectionResetError:  # as in `_upgrade_websocket`: the client left
            if not self.connected:
                await self.close(wait=False, abort=True)
            return web.Response(status=400, text="The connection closed during the handshake.")
        transport = request.transport
        assert transport is not None
        outbox = Outbox(
            response,
            transport,
            request.protocol,
            max_bytes=self.server.backlog_bytes,
            max_packets=self.server.backlog_packets,
        )
        self._attach(response, outbox)
        try:
            async for message in response:  # until it closes (or fails: too big, say)
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                self.on_message(message.data)
        finally:
            self.on_close(response)
        return response

    def _attach(self, link: Any, outbox: Outbox) -> None:
        self.link = link
        self._deaf = False
        if self.connected:  # a polling connection upgrading: engineio's probe dance first
            self.upgrading = True  # sends wait in the queue meanwhile
            self._probing = _AWAIT_PROBE
            self._next_outbox = outbox
        else:
            self.connected = True
            self.upgraded = True
            self._use(outbox)

    def _use(self, outbox: Outbox) -> None:
        self.outbox = outbox
        # What was queued for polling (during the upgrade, say) leaves first, in order;
        # from now on the outbox is the only way out, and the queue (four deques, a few
        # KiB a connection) is let go.
        queue, self.queue = self.queue, None
        while not queue.empty():
            queued = queue.get_nowait()
            if queued is None:
                outbox.end()
                break
            outbox.write_message(queued.encode())

    # -- receiving: callbacks from the websocket, packets handled in order --------------

    def on_message(self, data: str | bytes) -> None:
        if self._deaf:
            return
        if data == "3" and self._inbox is None and not self._probing:
            self.schedule_ping()  # a pong, the one message idle connections send
            return
        self._deliver(data)

    def on_close(self, link: Any) -> None:
        if link is self.link:
            self._deliver(None)

    def _deliver(self, item: str | bytes | None) -> None:
        if self._inbox is None:
            self._inbox = [item]
        else:
            self._inbox.append(item)
        if self._receiving is None:
            self._receiving = asyncio.create_task(self._receive_all())

    async def _receive_all(self) -> None:
        """Handle what arrived, in order; a task only while there is something to do."""
        try:
            while self._inbox:
                batch, self._inbox = self._inbox, None
                for item in batch:
                    if item is None:
                        await self._transport_closed()
                    elif not self._deaf:
                        await self._receive_one(item)
        finally:
            self._receiving = None

    async def _receive_one(self, data: str | bytes) -> None:
        problem = engine_malformed(data)
        if problem is not None:
            logger.info("closing a websocket that sent a malformed frame: %s", problem)
            await self._close_link(CLOSE_UNSUPPORTED_DATA, problem)
            return
        try:
            pkt = packet.Packet(encoded_packet=data)
            if self._probing:
                await self._probe(pkt)
            else:
                await self.receive(pkt)
        except exceptions.UnknownPacketError:
            pass
        except exceptions.SocketIsClosedError:
            await self._close_link(CLOSE_NORMAL)
        except Exception:
            # A handler's failure must not end the connection; log it and go on.
            self.server.logger.exception("Unknown receive error")

    async def _probe(self, pkt: packet.Packet) -> None:
        """engineio's upgrade dance: `2probe` -> `3probe`, then `5`."""
        if self._probing == _AWAIT_PROBE:
            if pkt.packet_type != packet.PING or pkt.data != "probe":
                await self._upgrade_failed("no PING packet")
                return
            await self.link.send_frame(
                packet.Packet(packet.PONG, data="probe").encode().encode(), WSMsgType.TEXT
            )
            self.queue.put_nowait(packet.Packet(packet.NOOP))  # ends the pending poll
            self._probing = _AWAIT_UPGRADE
            return
        if pkt.packet_type != packet.UPGRADE:
            await self._upgrade_failed("no UPGRADE packet")
            return
        outbox, self._next_outbox = self._next_outbox, None
        assert outbox is not None
        self._probing = 0
        self.upgraded = True
        self.upgrading = False
        self._use(outbox)
        if self.server.on_upgraded is not None:
            self.server.on_upgraded(self.sid)

    async def _upgrade_failed(self, why: str) -> None:
        """The websocket closes; the connection carries on polling."""
        logger.info("failed websocket upgrade: %s", why)  # never the sid: a bearer secret
        self._probing = 0
        self._next_outbox = None
        self.upgrading = False
        await self._close_link(CLOSE_NORMAL)

    async def _close_link(self, code: int, reason: str = "") -> None:
        """Close the websocket; the socket ends when it has (`_transport_closed`)."""
        self._deaf = True
        try:
            await self.link.close(code=code, message=reason.encode()[:120])
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("websocket close: %s", exc)

    async def _transport_closed(self) -> None:
        self.link = None
        if self.outbox.polling:  # an upgrade that did not finish: polling carries on
            self._probing = 0
            self._next_outbox = None
            self.upgrading = False
            return
        self.outbox.end()
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        if self.closed and self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]


TRANSPORTS = ("polling", "websocket")


def exact_heartbeat(handshake: dict[str, Any], interval_s: float, timeout_s: float) -> None:
    """Set the handshake's `pingInterval` and `pingTimeout` to the configured milliseconds:
    python-engineio announces `int(interval) * 1000`, so 2.5 s would read as 2,000 ms and a
    sub-second interval as 0."""
    handshake["pingInterval"] = round(interval_s * 1000)
    handshake["pingTimeout"] = round(timeout_s * 1000)


def request_problem(method: str, query: Mapping[str, str]) -> str | None:
    """Why an Engine.IO request is a bad request before any session is looked at (pure)."""
    if query.get("transport") not in TRANSPORTS:
        return "Transport unknown"
    if method == "POST" and not query.get("sid"):
        return "Bad handshake method"
    return None


class EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """engineio's server, whose sockets are `EngineSocket`s."""

    ws_compression = False
    backlog_bytes = 1_048_576
    backlog_packets = 1_000
    # Told a connection's sid once it has upgraded from long-polling to the websocket.
    on_upgraded: Callable[[str], None] | None = None
    proxies = TrustedProxies()  # who may say where a request comes from
    bind_sessions = True  # a session takes requests only from the address that opened it

    _pings: DelayQueue[EngineSocket] | None = None

    def ping_queue(self) -> DelayQueue[EngineSocket]:
        """Every socket's next ping, on one timer (`timers.py`)."""
        if self._pings is None or self._pings.delay != self.ping_interval:
            self._pings = DelayQueue(self.ping_interval, EngineSocket._ping)
        return self._pings

    async def _service_task(self) -> None:
        """engineio's watch for clients that stopped answering pings, one sweep of
        every socket per half ping timeout. engineio's looks at one socket per
        ping_timeout / N seconds, with an `asyncio.wait_for` (a task and a timer) each
        time: 50 wakeups a second at 1,000 idle connections, about a tenth of an idle
        server's samples (py-spy). A silent client is closed ping_interval +
        ping_timeout after its last pong, plus at most half a ping timeout (engineio's:
        plus at most a whole one)."""
        stop = self.service_task_event = asyncio.Event()
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.ping_timeout / 2):
                    await stop.wait()
                return
            except TimeoutError:
                pass
            for socket in list(self.sockets.values()):
                try:
                    if socket.closed:
                        self.sockets.pop(socket.sid, None)
                    elif not socket.closing:
                        await socket.check_ping_timeout()
                except Exception:  # one socket's failure must not end the watch
                    logger.exception("ping timeout check failed")

    def _announce_exact_heartbeat(self, socket: AsyncSocket) -> None:
        # The connect event comes right after python-engineio queued the OPEN packet,
        # before anything reads the queue: it is still there to correct.
        for pkt in socket.queue._queue:
            if pkt.packet_type == packet.OPEN and isinstance(pkt.data, dict):
                exact_heartbeat(pkt.data, self.ping_interval, self.ping_timeout)

    async def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        """Engine.IO v4's request errors as its spec has them, where python-engineio
        differs: a request without `transport` (it assumes polling) and a POST without
        `sid` (it answers 405) are 400 Bad Request; a second websocket for a session
        already upgraded is accepted and closed at once (it answered 400)."""
        request = args[0] if args else None
        if isinstance(request, web.Request):
            problem = request_problem(request.method, request.query)
            if problem is not None:
                return web.Response(
                    status=400, content_type="text/plain", text=jsoncodec.dumps(problem)
                )
            if not self._from_owner(request):
                logger.info("refused a request for a session opened from another address")
                return web.Response(
                    status=400, content_type="text/plain", text=jsoncodec.dumps("Invalid session")
                )
            if self._duplicate_websocket(request):
                duplicate = web.WebSocketResponse()
                await duplicate.prepare(request)
                await duplicate.close()
                return duplicate
        return await super().handle_request(*args, **kwargs)

    def session_for(self, request: web.Request) -> AsyncSocket | None:
        """The session a request names by its `sid`, if it has one and the request comes
        from the client address that opened it (see `_from_owner`)."""
        socket = self.sockets.get(request.query.get("sid", ""))
        return socket if socket is not None and self._from_owner(request) else None

    def _from_owner(self, request: web.Request) -> bool:
        """False when the request names a session by its `sid` and comes from another
        client address than the one that opened it: the sid is a bearer secret, and this
        makes a stolen one useless elsewhere. IPv6 addresses bind by their /64."""
        if not self.bind_sessions:
            return True
        socket = self.sockets.get(request.query.get("sid", ""))
        owner = getattr(socket, "address", "")
        return not owner or same_network(owner, self.proxies.peer_of(request).address)

    def _duplicate_websocket(self, request: web.Request) -> bool:
        socket = self.sockets.get(request.query.get("sid", ""))
        return (
            socket is not None
            and socket.upgraded
            and request.query.get("transport") == "websocket"
            and request.headers.get("Upgrade", "").lower() == "websocket"
        )

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect":
            socket = self.sockets.get(args[0])
            if socket is not None:
                self._announce_exact_heartbeat(socket)
            if socket is not None and type(socket) is AsyncSocket:
                socket.__class__ = EngineSocket
                environ = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
                socket.adopted(str(environ.get("REMOTE_ADDR", "")))
        return await super()._trigger_event(event, *args, **kwargs)
