"""python-socketio's AsyncServer, with the engine-level fixes this server relies on.

- A long-polling client that disconnects sends a CLOSE packet in a POST while its last
  GET is still waiting. python-engineio closes the socket without answering that GET, so
  the request hangs until the ping timeout (the client's `disconnect()` waits for it, and
  a server shutdown waits for it too). We answer it at once with an empty payload.
"""

from __future__ import annotations

from typing import Any

import engineio
import socketio


class SocketServer(socketio.AsyncServer):  # type: ignore[misc]
    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        if reason == engineio.AsyncServer.reason.CLIENT_DISCONNECT:
            socket = self.eio.sockets.get(eio_sid)
            if socket is not None and not socket.upgraded:
                socket.queue.put_nowait(None)  # ends a pending long-poll GET
