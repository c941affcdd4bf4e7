"""Encode once, frame once: the bytes of one `update` packet, built once per broadcast and
handed as they are to every local connection that gets the same events.

A Socket.IO `update` event in namespace `/` is the packet `2["update",[...]]`; Engine.IO
carries it as a message, `4` + packet. Over a websocket that is one text frame (server
frames are never masked), the same bytes for every recipient unless permessage-deflate
was negotiated; over long-polling engineio needs the packet as a string. Each form is
built the first time a recipient needs it.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from realtime.core.keys import UPDATE_EVENT
from realtime.transport.websocket import OP_TEXT, encode_frame

_UPDATE_PREFIX = b'2["' + UPDATE_EVENT.encode() + b'",'


def websocket_text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed, final websocket text frame."""
    return encode_frame(OP_TEXT, payload)


class Frame:
    """One Engine.IO message, in the forms the transports need."""

    __slots__ = ("_text", "_websocket", "message")

    def __init__(self, message: bytes) -> None:
        self.message = message  # the Engine.IO message: b"4" + the Socket.IO packet
        self._websocket: bytes | None = None
        self._text: str | None = None

    @classmethod
    def update(cls, events: list[dict[str, Any]], offset: str | None = None) -> Frame:
        """`42["update",[events...]]`, serialised once; with connection-state recovery
        on, `42["update",[events...],"<offset>"]` (an offset needs no JSON escaping:
        `realtime.delivery.recovery.Offset`)."""
        return cls.update_json(orjson.dumps(events), offset)

    @classmethod
    def update_json(cls, events: bytes, offset: str | None = None) -> Frame:
        """`update`, of the events' JSON list as it is (a fan-out message's, a shared
        history page's)."""
        tail = b"]" if offset is None else b',"' + offset.encode() + b'"]'
        return cls(b"".join((b"4", _UPDATE_PREFIX, events, tail)))

    @classmethod
    def event(cls, name: str, data: Any) -> Frame:
        """Any server-to-client event of namespace `/` without an ack."""
        return cls(b"42" + orjson.dumps([name, data]))

    @property
    def websocket(self) -> bytes:
        """The whole websocket frame, header included."""
        if self._websocket is None:
            self._websocket = websocket_text_frame(self.message)
        return self._websocket

    @property
    def packet(self) -> str:
        """The Socket.IO packet as engineio's own packets carry it (long-polling)."""
        if self._text is None:
            self._text = self.message[1:].decode("utf-8")
        return self._text

    def __len__(self) -> int:
        return len(self.message)
