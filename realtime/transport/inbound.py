"""What a Socket.IO client may send, checked before python-socketio dispatches it: the
first step of every client request. Pure.

Clients speak JSON text only. A packet that does not decode, carries binary data, names
no event, or names an event the protocol reserves (`connect`, `disconnect`, ...) is
malformed: the server closes that connection and nothing else happens. (A reserved name
would otherwise reach the server's own connect/disconnect handlers as if the protocol
had called them.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from socketio import packet

from realtime.core.peer import TrustedProxies

logger = logging.getLogger(__name__)

RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
_ACCEPTED = frozenset({packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK})


def malformed(data: Any, packet_class: type[packet.Packet] = packet.Packet) -> str | None:
    """Why an Engine.IO message is not a packet this server accepts, or None if it is."""
    if not isinstance(data, str):
        return "binary data (only JSON text packets are accepted)"
    try:
        pkt = packet_class(encoded_packet=data)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
        return f"not a Socket.IO packet ({type(exc).__name__})"
    if pkt.packet_type not in _ACCEPTED:
        return f"packet type {pkt.packet_type} is not accepted (binary attachments)"
    if pkt.packet_type == packet.EVENT:
        args = pkt.data
        if not isinstance(args, list) or not args or not isinstance(args[0], str):
            return "an event must be a list [name, ...arguments]"
        if args[0] in RESERVED_EVENTS:
            return f"event name {args[0]!r} is reserved"
    return None


_ENGINE_TYPES = frozenset("0123456")
# What a long-polling client POSTs (Engine.IO v4): close, pong, message. Pings, noops and
# the upgrade go the other way or over the websocket.
_POLLING_TYPES = frozenset("134")
_SEPARATOR = "\x1e"
CLOSE_PAYLOAD = b"1"  # an Engine.IO CLOSE packet


def polling_malformed(body: bytes) -> str | None:
    """Why a long-polling POST body is not an Engine.IO payload a client sends, or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    for packet_text in text.split(_SEPARATOR):
        if not packet_text or packet_text[0] not in _POLLING_TYPES:
            return "not an Engine.IO payload of close, pong and message packets"
    return None


def engine_malformed(data: Any) -> str | None:
    """Why a websocket message is not an Engine.IO text packet, or None if it is
    (`realtime.transport.engine` closes such a websocket with 1003, unsupported data)."""
    if not isinstance(data, str):
        return "binary frame (only JSON text packets are accepted)"
    if not data or data[0] not in _ENGINE_TYPES:
        return "not an Engine.IO packet"
    return None


class _CheckedBody:
    """A request body stream for python-engineio that hands it a malformed payload as a
    CLOSE packet: the client is treated as having closed, the normal way, instead of a
    decode error raising inside the engine (or a hang on what it cannot answer)."""

    def __init__(self, content: Any, timeout_s: float) -> None:
        self.content = content
        self.timeout_s = timeout_s

    async def read(self, n: int = -1) -> bytes:
        try:
            async with asyncio.timeout(self.timeout_s):
                body: bytes = await self.content.read(n)
        except TimeoutError:
            # A body that never ends: the session ends, the POST is answered and aiohttp
            # closes the connection after its lingering time.
            logger.info(
                "closing a long-polling connection whose POST body did not arrive within %gs",
                self.timeout_s,
            )
            return CLOSE_PAYLOAD
        problem = polling_malformed(body)
        if problem is None:
            return body
        logger.info("closing a long-polling connection that sent a malformed payload: %s", problem)
        return CLOSE_PAYLOAD


def guard_translate_request(
    translate: Any, read_timeout_s: float, proxies: TrustedProxies | None = None
) -> Any:
    """python-engineio's request translation, with POST bodies checked (`_CheckedBody`)
    and bounded in time, and the client's real address and scheme (`realtime.core.peer`)
    as `REMOTE_ADDR` and `wsgi.url_scheme`: python-engineio's driver says 127.0.0.1 for
    everyone and believes anyone's `X-Forwarded-Proto`."""
    trusted = proxies if proxies is not None else TrustedProxies()

    def translate_request(request: Any) -> dict[str, Any]:
        environ: dict[str, Any] = translate(request)
        if environ.get("REQUEST_METHOD") == "POST":
            environ["wsgi.input"] = _CheckedBody(environ["wsgi.input"], read_timeout_s)
        peer = trusted.peer_of(request)
        environ["REMOTE_ADDR"] = peer.address
        environ["wsgi.url_scheme"] = peer.scheme
        return environ

    return translate_request
