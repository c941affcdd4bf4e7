"""The client manager's room registry with an index from each client to its rooms.

python-socketio's `basic_disconnect` finds a client's rooms by scanning every room of
the namespace, and every client has a room of its own (its sid), so a disconnect costs
O(clients) and a mass disconnect (a drain, a network blip) O(clients²): about 10 s of
blocked event loop for 10,000 clients. This mixin keeps `(namespace, sid) -> rooms`
alongside the stock registry, so a disconnect costs O(the client's rooms). Everything
else is the stock manager's.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RoomWatcher = Callable[[str, Any, str, bool], None]


class RoomIndex:
    """Mix in before a python-socketio manager class."""

    rooms: dict[str, dict[Any, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, list[str]]
    pending_disconnect: dict[str, list[str]]
    room_watcher: RoomWatcher | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[tuple[str, str], set[Any]] = {}
        # Joins and leaves so far: a list of a room's members made when it was N is
        # still the room's while it is N (realtime.delivery.hub keeps such lists).
        self.room_changes = 0

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        self.room_changes += 1
        rooms = self._rooms_of.setdefault((namespace, sid), set())
        if self.room_watcher is not None and room not in rooms:
            self.room_watcher(namespace, room, sid, True)
        rooms.add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        self.room_changes += 1
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None and room in rooms:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[(namespace, sid)]
            if self.room_watcher is not None:
                self.room_watcher(namespace, room, sid, False)

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """The stock method, with the client's rooms from the index instead of a scan."""
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self._rooms_of.pop((namespace, sid), None)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [room for room in self._rooms_of.get((namespace, sid), ()) if room is not None]
