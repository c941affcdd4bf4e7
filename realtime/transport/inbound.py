"""What a Socket.IO client may send, checked before python-socketio dispatches it: the
first step of every client request. Pure.

A packet is JSON text, or a binary event or ack (`BINARY_EVENT`, `BINARY_ACK`) whose
text header is followed by its attachments as binary messages: at most
`MAX_ATTACHMENTS` of them, together within the largest message a client may send. A
packet that does not decode, an attachment nobody announced (or text where one was
due), an event without a name, or one the protocol reserves (`connect`,
`disconnect`, ...) is malformed: the server closes that connection and nothing else
happens. (A reserved name would otherwise reach the server's own connect/disconnect
handlers as if the protocol had called them.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

from socketio import packet

from realtime.core.peer import TrustedProxies

logger = logging.getLogger(__name__)

RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
# Binary attachments one packet may announce (socket.io-parser has no bound; a client
# sends one per Buffer/Blob/ArrayBuffer argument).
MAX_ATTACHMENTS = 10
_BINARY = frozenset({packet.BINARY_EVENT, packet.BINARY_ACK})
_EVENTS = frozenset({packet.EVENT, packet.BINARY_EVENT})
_ACCEPTED = frozenset({packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK}) | _BINARY


def malformed(data: Any, packet_class: type[packet.Packet] = packet.Packet) -> str | None:
    """Why an Engine.IO message is not a packet this server accepts (no attachment
    being awaited: see `attachment_malformed`), or None if it is."""
    if not isinstance(data, str):
        return "binary data that no binary packet announced"
    try:
        pkt = packet_class(encoded_packet=data)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
        return f"not a Socket.IO packet ({type(exc).__name__})"
    kind = pkt.packet_type
    if kind not in _ACCEPTED:
        return f"packet type {kind} is not accepted"
    if kind in _EVENTS:
        args = pkt.data
        if not isinstance(args, list) or not args or not isinstance(args[0], str):
            return "an event must be a list [name, ...arguments]"
        if args[0] in RESERVED_EVENTS:
            return f"event name {args[0]!r} is reserved"
    if kind in _BINARY:
        return _binary_problem(pkt)
    return None


def _binary_problem(pkt: packet.Packet) -> str | None:
    count = pkt.attachment_count
    if not 1 <= count <= MAX_ATTACHMENTS:
        return f"a binary packet must announce 1 to {MAX_ATTACHMENTS} attachments, not {count}"
    if not isinstance(pkt.data, list):
        return "a binary packet's data must be a list"
    # Every placeholder must name an announced attachment: python-socketio indexes its
    # list with `num` when the last one arrives.
    stack: list[Any] = [pkt.data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("_placeholder") and "num" in item:
                num = item["num"]
                if isinstance(num, bool) or not isinstance(num, int) or not 0 <= num < count:
                    return f"a placeholder names attachment {num!r} of {count}"
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def attachment_malformed(data: Any, received_bytes: int, max_bytes: int) -> str | None:
    """Why `data` is not the next attachment of a binary packet whose attachments so far
    hold `received_bytes` (all of them together: at most `max_bytes`), or None."""
    if not isinstance(data, bytes):
        return "a text packet where a binary attachment was due"
    if received_bytes + len(data) > max_bytes:
        return f"a binary packet's attachments exceed {max_bytes} bytes"
    return None


_ENGINE_TYPES = frozenset("0123456")
# What a long-polling client POSTs (Engine.IO v4): close, pong, message, and a binary
# message as `b` + base64. Pings, noops and the upgrade go the other way or over the
# websocket.
_POLLING_TYPES = frozenset("134b")
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
        if packet_text[0] == "b":
            try:
                base64.b64decode(packet_text[1:], validate=True)
            except binascii.Error:
                return "a binary message that is not base64"
    return None


def engine_malformed(data: Any) -> str | None:
    """Why a websocket message is not an Engine.IO packet, or None if it is: a text
    packet, or a binary message (a binary frame is one, whole; Socket.IO checks it)
    (`realtime.transport.engine` closes such a websocket with 1003, unsupported data)."""
    if not isinstance(data, str):
        return None if isinstance(data, bytes) and data else "an empty binary frame"
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
