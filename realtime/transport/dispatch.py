"""Dispatch of Socket.IO events, the project's handlers first: part of step 5 (the
Socket.IO server, `realtime.transport.server.SocketServer`, is one of these).

Handlers registered with python-socketio's own API (`on`, `event`, `register_namespace`:
extensions, realtime/web/extensions.py) come after the project's: a namespace's `first`
handler sees every event of its namespace and passes on what it does not handle
(`handlers_event`); a connect to any other namespace passes `gate` first (the token).
Packets sent to a connection while a connect handler runs wait, and leave right after
the CONNECT answer, in order, as socket.io's users expect (python-socketio sends them
before it). Nothing here is on the path of `update`s (`SocketServer.writer`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

import socketio
from socketio import packet


class Gate(Protocol):
    """Called before the connect handlers of a namespace without a `first` handler;
    raises socketio.exceptions.ConnectionRefusedError. `left`: before its disconnect
    handlers, or when its connect handlers refused it (called at most twice; once counts)."""

    def __call__(self, namespace: str, sid: str, environ: Any, auth: Any) -> Awaitable[None]: ...

    def left(self, namespace: str, sid: str) -> None: ...

    def check(self, namespace: str, sid: str, event: str) -> Any:
        """Before an event's handlers: None lets it through; anything else is the answer
        instead (the ack, when the client asked for one), and no handler runs."""
        ...


_ANSWERS = frozenset({packet.CONNECT, packet.CONNECT_ERROR})


class _Held:
    """What was sent to one connection while its connects were being handled."""

    __slots__ = ("connects", "packets", "releasing")

    def __init__(self) -> None:
        self.connects = 0
        self.packets: list[tuple[bool, Any]] = []  # (an Engine.IO packet?, the packet)
        self.releasing = False


class ExtensibleServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first: dict[str, socketio.AsyncNamespace] = {}
        self.gate: Gate | None = None
        self._held: dict[str, _Held] = {}

    # -- dispatch: the project's handlers first, then python-socketio's ------------------

    def register_first(self, handler: socketio.AsyncNamespace) -> None:
        """The project's handler of `handler.namespace`: every event of the namespace
        goes to it, whatever is registered there with python-socketio's API."""
        handler._set_server(self)
        self.first[handler.namespace] = handler

    async def handlers_event(self, event: str, namespace: str, *args: Any) -> Any:
        """python-socketio's dispatch to the handlers registered with its API (`on`,
        `event`, `register_namespace`); `not_handled` if there is none."""
        return await socketio.AsyncServer._trigger_event(self, event, namespace, *args)

    async def handlers_connect(self, namespace: str, sid: str, environ: Any, auth: Any) -> Any:
        """`handlers_event("connect", ...)`, with the legacy signature (no `auth`)
        tried as python-socketio's `_handle_connect` tries it."""
        if auth:
            return await self.handlers_event("connect", namespace, sid, environ, auth)
        try:
            return await self.handlers_event("connect", namespace, sid, environ, None)
        except TypeError:
            return await self.handlers_event("connect", namespace, sid, environ)

    async def _dispatch(self, event: str, namespace: str, args: tuple[Any, ...]) -> Any:
        first = self.first.get(namespace)
        if first is not None:
            return await first.trigger_event(event, *args)
        if event == "connect" and self.gate is not None:
            sid, environ, *auth = args
            await self.gate(namespace, sid, environ, auth[0] if auth else None)
            # A connect the handlers refuse gets no disconnect: the gate hears of it here.
            try:
                accepted = await super()._trigger_event(event, namespace, *args)
            except BaseException:
                self.gate.left(namespace, sid)
                raise
            if accepted is False:
                self.gate.left(namespace, sid)
            return accepted
        if self.gate is not None:
            if event == "disconnect":
                self.gate.left(namespace, args[0])
            elif args:
                refused = self.gate.check(namespace, args[0], event)
                if refused is not None:
                    return refused
        return await super()._trigger_event(event, namespace, *args)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        # socket.io's CONNECT comes before whatever the connect handlers emit: what they
        # send waits (`_send_packet`, `_send_eio_packet`) until python-socketio answered.
        held = self._held.get(eio_sid)
        if held is None:
            held = self._held[eio_sid] = _Held()
        held.connects += 1
        try:
            await super()._handle_connect(eio_sid, namespace, data)
        finally:
            held.connects -= 1
            await self._release(eio_sid, held)

    async def _release(self, eio_sid: str, held: _Held) -> None:
        """Send what waited, in order, once no connect of the connection is in progress."""
        if held.releasing:
            return  # the release under way sends it
        held.releasing = True
        try:
            while held.packets and not held.connects:
                engine_level, pkt = held.packets.pop(0)
                if engine_level:
                    await super()._send_eio_packet(eio_sid, pkt)
                else:
                    await super()._send_packet(eio_sid, pkt)
        finally:
            held.releasing = False
        if not held.connects and not held.packets and self._held.get(eio_sid) is held:
            del self._held[eio_sid]

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        held = self._held.get(eio_sid) if self._held else None
        if held is not None and pkt.packet_type not in _ANSWERS:
            held.packets.append((False, pkt))
            return
        await super()._send_packet(eio_sid, pkt)

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        held = self._held.get(eio_sid) if self._held else None
        if held is not None:
            held.packets.append((True, eio_pkt))
            return
        await super()._send_eio_packet(eio_sid, eio_pkt)
