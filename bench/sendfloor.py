"""`python -m bench.sendfloor`: what one `send` of a small frame costs on this machine,
with nothing else around it: the floor under any server's cost per delivery.

A receiver process (pinned to --client-cpu) opens N TCP connections to this process
(pinned to --server-cpu), which writes a ~200-byte websocket frame to each of them in
rounds, through uvloop transports as the web server does, and reports its own user and
system CPU per write. On loopback the sender's core also runs the receiving side of TCP,
so this is more than a send to a remote client costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys

import uvloop

from realtime.dev.embedded import free_port
from realtime.loadtest.frames import server_frame

RECEIVER = """
import asyncio, os, sys
import uvloop
async def main(port, n, total):
    got = 0
    done = asyncio.get_running_loop().create_future()
    class Receiver(asyncio.Protocol):
        def data_received(self, data):
            nonlocal got
            got += len(data)
            if got >= total and not done.done():
                done.set_result(None)
    for _ in range(n):
        await asyncio.get_running_loop().create_connection(Receiver, "127.0.0.1", port)
    await done
uvloop.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
"""


async def one_run(connections: int, rounds: int, client_cpu: int) -> tuple[float, float]:
    """(user, system) microseconds of this process's CPU per write."""
    frame = server_frame(b"4" + b"x" * 200)
    transports: list[asyncio.Transport] = []
    ready = asyncio.Event()

    class Sender(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)  # type: ignore[arg-type]
            if len(transports) == connections:
                ready.set()

    port = free_port()
    server = await asyncio.get_running_loop().create_server(Sender, "127.0.0.1", port)
    total = len(frame) * connections * rounds
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RECEIVER, str(port), str(connections), str(total),
        preexec_fn=lambda: os.sched_setaffinity(0, {client_cpu}),
    )  # fmt: skip
    try:
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(0.5)
        before = os.times()
        for _ in range(rounds):
            for transport in transports:
                transport.write(frame)
            await asyncio.sleep(0.01)  # like live batches: a burst, then the loop is free
        after = os.times()
        await asyncio.wait_for(receiver.wait(), 60)
    finally:
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()
        for transport in transports:
            transport.abort()
        server.close()
    writes = connections * rounds
    return (
        (after.user - before.user) / writes * 1e6,
        (after.system - before.system) / writes * 1e6,
    )


async def main(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {args.server_cpu})
    users, systems = [], []
    for run in range(args.runs):
        user, system = await one_run(args.connections, args.rounds, args.client_cpu)
        users.append(user)
        systems.append(system)
        print(
            f"run {run + 1}: {user:.1f} us user + {system:.1f} us system per write",
            file=sys.stderr,
        )
    print(
        f"one {len(server_frame(b'4' + b'x' * 200))}-byte frame to each of "
        f"{args.connections:,} sockets, {args.rounds} rounds, medians of {args.runs}: "
        f"{statistics.median(users):.1f} us user + {statistics.median(systems):.1f} us "
        "system per write"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.sendfloor", description=__doc__)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    uvloop.run(main(parser.parse_args()))
