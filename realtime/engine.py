"""Engine.IO, as python-engineio does it, with a leaner websocket path.

python-engineio runs, per websocket connection, a writer task draining an
`asyncio.Queue` (one wake-up and one encode per packet per recipient), a task per
received message, and a task per ping cycle. Here, once a connection is on the
websocket transport (directly, or after the polling -> websocket upgrade), packets go
through its `Outbox` (`realtime.outbox`): written to the transport at once, in order,
pre-encoded frames shared between recipients. Pings are timer callbacks. What stays
engineio's own: the handshake, long-polling (packets still go through its queue), the
upgrade dance, ping timeouts (its service task), and every event it raises.

python-engineio creates its socket objects itself (`AsyncSocket`); `EngineServer` adopts
each one as an `EngineSocket` when the connection is opened, before any packet after
the handshake is sent.

permessage-deflate is off unless `REALTIME_WS_COMPRESSION=1` (see the README's
performance section for why).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import engineio
from aiohttp import web
from engineio import exceptions, packet
from engineio.async_socket import AsyncSocket

from realtime.frames import Frame
from realtime.outbox import Outbox


class EngineWebSocket:
    """engineio's aiohttp websocket driver, with compression as configured and the
    transport in reach of the outbox."""

    def __init__(self, handler: Any, server: EngineServer) -> None:
        self.handler = handler
        self.server = server
        self.response: web.WebSocketResponse | None = None
        self.request: web.BaseRequest | None = None

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        self.request = environ["aiohttp.request"]
        self.response = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=self.server.ws_compression
        )
        await self.response.prepare(self.request)
        await self.handler(self)
        return self.response

    def outbox(self) -> Outbox:
        assert self.response is not None
        assert self.request is not None
        transport = self.request.transport
        assert transport is not None
        return Outbox(
            self.response,
            transport,
            self.request.protocol,
            max_bytes=self.server.backlog_bytes,
            max_packets=self.server.backlog_packets,
        )

    async def send(self, message: str | bytes) -> None:
        assert self.response is not None
        if isinstance(message, bytes):
            await self.response.send_bytes(message)
        else:
            await self.response.send_str(message)

    async def wait(self) -> str | bytes:
        assert self.response is not None
        msg = await self.response.receive()
        if not isinstance(msg.data, bytes | str):
            raise OSError("websocket closed")
        return msg.data

    async def close(self) -> None:
        if self.response is not None:
            await self.response.close()


class EngineSocket(AsyncSocket):  # type: ignore[misc]
    """One Engine.IO connection. Defaults live on the class: engineio constructs the
    object as an `AsyncSocket` and `EngineServer` adopts it."""

    last_ping: float | None
    queue: Any  # asyncio.Queue; None once the connection is on the websocket
    connected: bool
    outbox: Outbox | None = None
    _ping_handle: asyncio.TimerHandle | None = None
    _on_polled: Any = None

    # -- sending ------------------------------------------------------------------------

    def push(self, frame: Frame) -> None:
        """Hand an `update` frame to this connection, whatever its transport."""
        if self.closing or self.closed:
            return
        if self.outbox is not None:
            self.outbox.write(frame)
        else:
            self.queue.put_nowait(packet.Packet(packet.MESSAGE, data=frame.packet))

    def backlog_full(self) -> bool:
        if self.outbox is not None:
            return self.outbox.full()
        return bool(self.queue.qsize() >= self.server.backlog_packets)

    def notify_drained(self, callback: Any) -> None:
        """Call `callback` once, when the backlog has been handed to the client."""
        if self.outbox is not None:
            self.outbox.notify_drained(callback)
        elif self.queue.empty():
            asyncio.get_running_loop().call_soon(callback)
        else:
            self._on_polled = callback

    def _put(self, pkt: packet.Packet) -> None:
        if self.outbox is not None:
            self.outbox.write_message(pkt.encode())
        else:
            self.queue.put_nowait(pkt)

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

    # -- pings: a timer, not a task per cycle -------------------------------------------

    def schedule_ping(self) -> None:
        if self.last_ping:
            self.last_ping = None
            loop = asyncio.get_running_loop()
            self._ping_handle = loop.call_later(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        self._ping_handle = None
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self._put(packet.Packet(packet.PING))

    # -- ending -------------------------------------------------------------------------

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        if self._ping_handle is not None:
            self._ping_handle.cancel()
            self._ping_handle = None
        await super().close(wait=wait and self.outbox is None, abort=abort, reason=reason)
        if self.outbox is not None:
            self.outbox.end()

    def end_transport(self) -> None:
        """End the websocket, or answer a pending long-poll GET, without a close packet."""
        if self.outbox is not None:
            self.outbox.end()
        else:
            self.queue.put_nowait(None)

    def abandon(self, last: list[Frame]) -> None:
        """Cut a connection off: drop its backlog, send the messages `last` and the
        Engine.IO close, and end the transport (see `Outbox.abandon`)."""
        if self.outbox is not None:
            self.outbox.abandon([*last, Frame(packet.Packet(packet.CLOSE).encode().encode())])
        else:
            while not self.queue.empty():
                self.queue.get_nowait()
                self.queue.task_done()
            for frame in last:
                self.queue.put_nowait(packet.Packet(packet.MESSAGE, data=frame.packet))
            self.queue.put_nowait(packet.Packet(packet.CLOSE))

    # -- the websocket transport --------------------------------------------------------

    async def _websocket_handler(self, ws: EngineWebSocket) -> None:
        if self.connected:  # a polling connection upgrading: engineio's probe dance
            self.upgrading = True  # sends wait in the queue meanwhile
            if not await self._upgrade(ws):
                self.upgrading = False
                return
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True
        self.outbox = outbox = ws.outbox()
        # What was queued for polling (during the upgrade, say) leaves first, in order;
        # from now on the outbox is the only way out, and the queue (four deques, a few
        # KiB a connection) is let go.
        queue, self.queue, queued = self.queue, None, None
        while not queue.empty():
            queued = queue.get_nowait()
            if queued is None:
                outbox.end()
                break
            outbox.write_message(queued.encode())
        del queue, queued  # this frame lives as long as the connection
        try:
            await self._read(ws)
        finally:
            outbox.end()
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _upgrade(self, ws: EngineWebSocket) -> bool:
        try:
            probe = packet.Packet(encoded_packet=await ws.wait())
        except OSError:
            return False
        if probe.packet_type != packet.PING or probe.data != "probe":
            self.server.logger.info("%s: Failed websocket upgrade, no PING packet", self.sid)
            return False
        await ws.send(packet.Packet(packet.PONG, data="probe").encode())
        self.queue.put_nowait(packet.Packet(packet.NOOP))  # ends the pending poll
        try:
            upgrade = packet.Packet(encoded_packet=await ws.wait())
        except OSError:
            return False
        if upgrade.packet_type != packet.UPGRADE:
            self.server.logger.info("%s: Failed websocket upgrade, no UPGRADE packet", self.sid)
            return False
        return True

    async def _read(self, ws: EngineWebSocket) -> None:
        # No timeout per read: a peer that stops answering pings is closed by engineio's
        # service task (`close` ends the outbox, which ends the websocket, and this).
        while True:
            try:
                data = await ws.wait()
            except (OSError, ConnectionError):
                return
            if len(data) > self.server.max_http_buffer_size:
                return
            try:
                await self.receive(packet.Packet(encoded_packet=data))
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                return
            except Exception:
                # A handler's failure must not end the connection; log it and go on.
                self.server.logger.exception("Unknown receive error")


class EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """engineio's server, whose sockets are `EngineSocket`s."""

    _async: dict[str, Any]
    ws_compression = False
    backlog_bytes = 1_048_576
    backlog_packets = 1_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async = {**self._async, "websocket": EngineWebSocket}

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect":
            socket = self.sockets.get(args[0])
            if socket is not None and type(socket) is AsyncSocket:
                socket.__class__ = EngineSocket
        return await super()._trigger_event(event, *args, **kwargs)
