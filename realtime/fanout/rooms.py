"""The client manager's room registry, lean per connection, with an index from each
client to its rooms.

python-socketio's `basic_disconnect` finds a client's rooms by scanning every room of
the namespace, and every client has a room of its own (its sid), so a disconnect costs
O(clients) and a mass disconnect (a drain, a network blip) O(clients²): about 10 s of
blocked event loop for 10,000 clients. This mixin keeps `(namespace, sid) -> rooms`
alongside the stock registry, so a disconnect costs O(the client's rooms).

A client's own room is not stored: python-socketio makes it a `bidict` (three objects)
per connection, and indexing it was a set more, about 0.6 KiB of an idle connection
(tracemalloc, `python -m bench.idle_heap`). It is answered from the namespace's `None`
room (every connected sid, with its Engine.IO sid), where it is the same one member;
the index holds the rooms a client joined besides those two. Everything else is the
stock manager's, which reads the sid room only through the methods overridden here.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
        # (namespace, sid) -> the rooms the client joined besides None and its own.
        self._rooms_of: dict[tuple[str, str], set[Any]] = {}
        # (namespace, sid) of connected clients not in their own room: between the two
        # joins of a connect, or after leaving it (python-socketio lets a client do that;
        # rare, so remembered rather than the room stored).
        self._outside_own: set[tuple[str, str]] = set()
        # Joins and leaves so far: a list of a room's members made when it was N is
        # still the room's while it is N (realtime.delivery.hub keeps such lists).
        self.room_changes = 0

    def _own_room(self, namespace: str, room: Any) -> str | None:
        """The Engine.IO sid of the client whose own room `room` is, if it has one."""
        members = self.rooms.get(namespace, {}).get(None)
        if members is None or room is None:
            return None
        eio_sid: str | None = members.get(room)
        if eio_sid is None or (namespace, room) in self._outside_own:
            return None
        return eio_sid

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        if room is not None and room == sid:  # its own room: answered from the None room
            if eio_sid is None:  # as the stock method fails
                if namespace not in self.rooms:
                    raise ValueError("sid is not connected to requested namespace")
                if sid not in self.rooms[namespace].get(None, {}):
                    raise KeyError(sid)
            self.room_changes += 1
            if (namespace, sid) in self._outside_own:
                self._outside_own.discard((namespace, sid))
                self._tell(namespace, room, sid, True)
            return
        joining = room is None and sid not in self.rooms.get(namespace, {}).get(None, {})
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        self.room_changes += 1
        if room is None:
            if joining:  # in its own room once it enters it (the next call, on connect)
                self._outside_own.add((namespace, sid))
                self._tell(namespace, room, sid, True)
            return
        rooms = self._rooms_of.setdefault((namespace, sid), set())
        if room not in rooms:
            rooms.add(room)
            self._tell(namespace, room, sid, True)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        if room is not None and room == sid:
            self.room_changes += 1
            if self._own_room(namespace, sid) is not None:
                self._outside_own.add((namespace, sid))
                self._tell(namespace, room, sid, False)
            return
        was_connected = room is None and sid in self.rooms.get(namespace, {}).get(None, {})
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        self.room_changes += 1
        if room is None:
            if was_connected:
                self._outside_own.discard((namespace, sid))
                self._tell(namespace, room, sid, False)
            return
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None and room in rooms:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[(namespace, sid)]
            self._tell(namespace, room, sid, False)

    def _tell(self, namespace: str, room: Any, sid: str, joined: bool) -> None:
        if self.room_watcher is not None:
            self.room_watcher(namespace, room, sid, joined)

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """The stock method, with the client's rooms from the index instead of a scan."""
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self._rooms_of.pop((namespace, sid), None)
        self.basic_leave_room(sid, namespace, sid)
        self.basic_leave_room(sid, namespace, None)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        own = [sid] if self._own_room(namespace, sid) is not None else []
        return own + list(self._rooms_of.get((namespace, sid), ()))

    def get_participants(self, namespace: str, room: Any) -> Iterator[tuple[str, str]]:
        """The stock method (`(sid, eio_sid)` of a room's members, or of several
        rooms'), answering a client's own room too."""
        ns = self.rooms.get(namespace, {})
        if hasattr(room, "__len__") and not isinstance(room, str):
            participants: dict[str, str] = {}
            for each in room:
                participants.update(self._members(ns, namespace, each))
        else:
            participants = self._members(ns, namespace, room)
        yield from participants.items()

    def _members(self, ns: dict[Any, Any], namespace: str, room: Any) -> dict[str, str]:
        members = ns.get(room)
        if members is not None:
            return dict(members._fwdm)
        eio_sid = self._own_room(namespace, room)
        return {} if eio_sid is None else {room: eio_sid}
