"""The Python client's side of connection-state recovery: python-socketio has none of its
own, so the client keeps the server's resume token (`<pid>.<offset>`: the `pid` of the
CONNECT answer and the offset each `update` carries last) and sends it in the auth of
its next CONNECT (`{"resume": token}`); the server then restores the session's
subscriptions and replays what was missed (docs/protocol.md)."""

from __future__ import annotations

from typing import Any

import socketio

from realtime.core.keys import NAMESPACE


class ResumeState:
    """The session this client can ask to recover, as the server last described it."""

    def __init__(self) -> None:
        self.pid: str | None = None
        self.token: str | None = None
        self.recovered = False  # whether the latest connect recovered the session

    def connected(self, data: dict[str, Any]) -> None:
        """A CONNECT answer: the same pid as before means the session was recovered."""
        pid = data.get("pid")
        pid = pid if isinstance(pid, str) else None
        self.recovered = pid is not None and pid == self.pid
        self.pid = pid
        token = data.get("resume")
        self.token = token if isinstance(token, str) and pid is not None else None

    def updated(self, offset: Any) -> None:
        """An `update` arrived with this trailing offset."""
        if self.pid is not None and isinstance(offset, str):
            self.token = f"{self.pid}.{offset}"

    def auth(self) -> dict[str, str]:
        return {} if self.token is None else {"resume": self.token}


class SessionClient(socketio.AsyncClient):  # type: ignore[misc]
    """python-socketio's client, reading the CONNECT answer of `/` into `resume`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume = ResumeState()

    async def _handle_connect(self, namespace: str | None, data: Any) -> None:
        if (namespace or NAMESPACE) == NAMESPACE and NAMESPACE not in self.namespaces:
            self.resume.connected(data if isinstance(data, dict) else {})
        await super()._handle_connect(namespace, data)
