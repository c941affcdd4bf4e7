"""Benchmark: disconnecting every client of an instance, python-socketio's stock room
registry against ours with a per-client index (`realtime/fanout/rooms.py`), in one run.

    .venv/bin/python -m bench.rooms [--clients 1000 4000] [--rooms 1] [--runs 3]

Each client is connected to namespace `/` (its `None` and sid rooms) and subscribed to
`--rooms` topics; then all are disconnected one by one, as a drain or a network blip
does. Prints the time per mass disconnect (median of --runs) and the ratio of ours to
the stock manager. No I/O: this is the registry's own cost, which blocks the event loop.
"""

from __future__ import annotations

import argparse
import statistics
import time

import socketio

from realtime.fanout.rooms import RoomIndex


class IndexedManager(RoomIndex, socketio.AsyncManager):  # type: ignore[misc]
    pass


def mass_disconnect(manager_class: type[socketio.AsyncManager], clients: int, rooms: int) -> float:
    manager = manager_class()
    for n in range(clients):
        sid = f"s{n}"
        manager.basic_enter_room(sid, "/", None, eio_sid=f"e{n}")
        manager.basic_enter_room(sid, "/", sid)
        for r in range(rooms):
            manager.basic_enter_room(sid, "/", f"topic.{(n + r) % 100}")
    started = time.perf_counter()
    for n in range(clients):
        manager.basic_disconnect(f"s{n}", "/")
    elapsed = time.perf_counter() - started
    assert not manager.rooms.get("/"), "clients left behind"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--rooms", type=int, default=1, help="topics per client")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'clients':>8} {'stock':>10} {'indexed':>10} {'ratio':>8}")
    for clients in args.clients:
        stock, ours = [], []
        for _ in range(args.runs):  # interleaved, so a busy moment hits both
            stock.append(mass_disconnect(socketio.AsyncManager, clients, args.rooms))
            ours.append(mass_disconnect(IndexedManager, clients, args.rooms))
        s, o = statistics.median(stock), statistics.median(ours)
        print(f"{clients:>8,} {s:>9.3f}s {o:>9.3f}s {o / s:>7.3f}x")


if __name__ == "__main__":
    main()
