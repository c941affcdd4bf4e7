"""The room index (`realtime/fanout/rooms.py`) answers as python-socketio's registry does,
whatever the order of connects, joins, leaves and disconnects: the same members of every
room (a client's own room too, which it does not store) and the same rooms of every
client."""

from __future__ import annotations

from typing import Any

import pytest
import socketio
from hypothesis import given
from hypothesis import strategies as st

from realtime.fanout.rooms import RoomIndex

pytestmark = pytest.mark.unit


class IndexedManager(RoomIndex, socketio.AsyncManager):  # type: ignore[misc]
    pass


SIDS = [f"s{n}" for n in range(4)]
ROOMS = ["a", "b", "c"]
NAMESPACES = ["/", "/admin"]

operations = st.lists(
    st.tuples(
        st.sampled_from(["connect", "enter", "leave", "disconnect", "close"]),
        st.sampled_from(SIDS),
        st.sampled_from(ROOMS),
        st.sampled_from(NAMESPACES),
    ),
    max_size=60,
)


def apply(manager: socketio.AsyncManager, op: str, sid: str, room: str, namespace: str) -> None:
    connected = sid in manager.rooms.get(namespace, {}).get(None, {})
    if op == "connect" and not connected:
        manager.basic_enter_room(sid, namespace, None, eio_sid="e" + sid)
        manager.basic_enter_room(sid, namespace, sid)
    elif op == "enter" and connected:
        manager.basic_enter_room(sid, namespace, room)
    elif op == "leave":
        manager.basic_leave_room(sid, namespace, room)
    elif op == "disconnect":
        manager.basic_disconnect(sid, namespace)
    elif op == "close":
        manager.basic_close_room(room, namespace)


def answers(manager: socketio.AsyncManager) -> dict[str, Any]:
    """What the registry answers, for every namespace, room and client."""
    out: dict[str, Any] = {}
    for namespace in NAMESPACES:
        out[namespace] = (
            namespace in manager.rooms,
            {
                repr(room): sorted(manager.get_participants(namespace, room))
                for room in [None, *ROOMS, *SIDS]
            },
            sorted(manager.get_participants(namespace, [ROOMS[0], SIDS[0], SIDS[1]])),
            {sid: sorted(manager.get_rooms(sid, namespace)) for sid in SIDS},
            {sid: manager.is_connected(sid, namespace) for sid in SIDS},
            {sid: manager.eio_sid_from_sid(sid, namespace) for sid in SIDS},
        )
    return out


@given(operations)
def test_the_index_answers_as_the_stock_manager_does(
    ops: list[tuple[str, str, str, str]],
) -> None:
    stock, indexed = socketio.AsyncManager(), IndexedManager()
    for op in ops:
        apply(stock, *op)
        apply(indexed, *op)
        assert answers(indexed) == answers(stock), op


def test_no_room_is_stored_for_a_clients_own() -> None:
    """The own room of each client is the None room's entry, not an object of its own
    (a bidict per connection: the memory of an idle connection)."""
    manager = IndexedManager()
    for sid in SIDS:
        manager.basic_enter_room(sid, "/", None, eio_sid="e" + sid)
        manager.basic_enter_room(sid, "/", sid, eio_sid="e" + sid)
    assert list(manager.rooms["/"]) == [None]
    assert manager._rooms_of == {}
    assert list(manager.get_participants("/", "s1")) == [("s1", "es1")]


def test_a_client_can_leave_its_own_room_and_come_back() -> None:
    stock, indexed = socketio.AsyncManager(), IndexedManager()
    for manager in (stock, indexed):
        manager.basic_enter_room("s1", "/", None, eio_sid="e1")
        manager.basic_enter_room("s1", "/", "s1", eio_sid="e1")
        manager.basic_leave_room("s1", "/", "s1")
    assert answers(indexed) == answers(stock)
    assert list(indexed.get_participants("/", "s1")) == []
    for manager in (stock, indexed):
        manager.basic_enter_room("s1", "/", "s1")
    assert answers(indexed) == answers(stock)
    with pytest.raises(KeyError):
        indexed.basic_enter_room("s2", "/", "s2")  # not connected: as the stock fails


def test_disconnect_forgets_the_client_and_its_pending_callbacks() -> None:
    manager = IndexedManager()
    manager.basic_enter_room("s1", "/", None, eio_sid="e1")
    manager.basic_enter_room("s1", "/", "s1")
    manager.basic_enter_room("s1", "/", "a")
    manager.callbacks["s1"] = {}
    manager.basic_disconnect("s1", "/")
    assert manager.rooms == {}
    assert "s1" not in manager.callbacks
    assert manager.get_rooms("s1", "/") == []


@given(operations)
def test_the_room_watcher_is_told_each_real_join_and_leave(
    ops: list[tuple[str, str, str, str]],
) -> None:
    """What the Admin UI is told adds up to the registry: replaying the reported joins
    and leaves gives every client's rooms; no repeats, nothing that did not change."""
    manager = IndexedManager()
    told: list[tuple[str, object, str, bool]] = []
    manager.room_watcher = lambda *change: told.append(change)
    replayed: dict[tuple[str, str], set[object]] = {}
    for op in ops:
        apply(manager, *op)
        for namespace, room, sid, joined in told:
            rooms = replayed.setdefault((namespace, sid), set())
            assert (room in rooms) != joined, f"{op}: repeated {'join' if joined else 'leave'}"
            (rooms.add if joined else rooms.discard)(room)
        told.clear()
        for namespace in NAMESPACES:
            for sid in SIDS:
                got = {r for r in replayed.get((namespace, sid), set()) if r is not None}
                assert got == set(manager.get_rooms(sid, namespace))
