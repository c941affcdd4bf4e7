"""The room index (`realtime/fanout/rooms.py`) keeps python-socketio's registry exactly as the
stock manager does, whatever the order of connects, joins, leaves and disconnects."""

from __future__ import annotations

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


@given(operations)
def test_the_index_keeps_the_registry_as_the_stock_manager_does(
    ops: list[tuple[str, str, str, str]],
) -> None:
    stock, indexed = socketio.AsyncManager(), IndexedManager()
    for op in ops:
        apply(stock, *op)
        apply(indexed, *op)
        assert indexed.rooms == stock.rooms
    for namespace in NAMESPACES:
        for sid in SIDS:
            assert sorted(indexed.get_rooms(sid, namespace)) == sorted(
                stock.get_rooms(sid, namespace)
            )


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
