"""Where an idle connection's bytes go: tracemalloc of this checkout's web at N and 2N
idle websocket connections, the difference per connection grouped by where it was
allocated.

    .venv/bin/python -m bench.idle_heap [--connections 2000] [--frames 8] [--top 40]

Runs `realtime serve`'s app in this process (pinned to --server-cpu, on uvloop, with
tracemalloc tracing from the start) and the clients in a child process (--client-cpu),
connected as `python -m bench.idle` connects them. Prints the Python heap per
connection, the allocations behind it (the innermost frames of each traceback), and
what the cyclic collector would still free (handshake garbage waiting for a collection:
it counts in RSS until then). Much slower than the server is: a profile, not a bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import linecache
import os
import resource
import sys
import tempfile
import tracemalloc
from pathlib import Path

from bench.servers import ours_env
from realtime.dev.embedded import RedisServer, free_port


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


class ClientProcess:
    """The clients, in a process of their own: `open(n)` connects n more."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, cpu: int) -> ClientProcess:
        proc = await asyncio.create_subprocess_exec(
            "taskset",
            "-c",
            str(cpu),
            sys.executable,
            "-m",
            "bench.idle_heap",
            "--client",
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def open(self, n: int) -> int:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{n}\n".encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        return int(line)

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


async def client_main(url: str) -> None:
    """The child: on each line `n` of stdin, connect n more idle clients and print how
    many are open."""
    from bench.loadgen import Tally, open_clients

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    clients = []
    while line := await reader.readline():
        # Few at a time, patiently: a traced server is several times slower.
        opened = await open_clients(
            [url], int(line), lambda i: None, Tally(), concurrency=20, timeout_s=300.0
        )
        clients.extend(opened.clients)
        print(sum(1 for c in clients if c.is_open), flush=True)
    for client in clients:
        client.abort()


def where(trace: tracemalloc.Traceback, frames: int) -> str:
    """The innermost `frames` frames, one a line, innermost last."""
    lines = []
    for frame in list(trace)[-frames:]:
        name = frame.filename
        for marker in ("site-packages/", "/realtime/", "/lib/python3"):
            if marker in name:
                name = name[name.index(marker) + len(marker) :]
                break
        code = linecache.getline(frame.filename, frame.lineno).strip()
        lines.append(f"      {name}:{frame.lineno}  {code[:70]}")
    return "\n".join(reversed(lines))


async def settle() -> None:
    """Wait until the web has handled what the clients sent (a traced web is slow) and
    its first session checkpoints are written: no task left but the long-lived ones."""
    await asyncio.sleep(3.0)
    for _ in range(60):
        tasks = asyncio.all_tasks()
        if len(tasks) < 50:
            break
        await asyncio.sleep(1.0)
    names: dict[str, int] = {}
    for task in tasks:
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", repr(coro))
        names[name] = names.get(name, 0) + 1
    print(f"  tasks: {sorted(names.items(), key=lambda kv: -kv[1])[:8]}", flush=True)


async def measure(args: argparse.Namespace, redis_url: str) -> None:
    from realtime.core.settings import Settings
    from realtime.web.app import create_app
    from realtime.web.server import serve

    port = free_port()
    env = ours_env(redis_url) | {"PORT": str(port), "HOST": "127.0.0.1"}
    for setting in args.env:
        key, _, value = setting.partition("=")
        env[key] = value
    settings = Settings.from_env(env).with_overrides(host="127.0.0.1", port=port)
    server = asyncio.create_task(serve(create_app(settings), settings))
    await asyncio.sleep(2.0)
    clients = await ClientProcess.start(f"http://127.0.0.1:{port}", args.client_cpu)
    n = args.connections
    try:
        # A first batch warms every code path (and the allocator's free lists).
        await clients.open(n)
        await settle()
        gc.collect()
        # Traced from here on: what the second batch allocates (and the snapshots stay
        # small; a block allocated before and freed after is simply not seen).
        tracemalloc.start(args.depth)
        first = tracemalloc.take_snapshot()
        rss_first = rss_kib()
        opened = await clients.open(n)
        await settle()
        rss_before_gc = rss_kib()
        garbage_snapshot = tracemalloc.take_snapshot()
        found = gc.collect()
        second = tracemalloc.take_snapshot()
        if args.holders:
            holders()
        rss_second = rss_kib()
        if opened != 2 * n:
            raise RuntimeError(f"only {opened} of {2 * n} connected")
    finally:
        await clients.stop()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    report(args, first, garbage_snapshot, second, rss_first, rss_before_gc, rss_second, found)


def holders() -> None:
    """Done tasks still alive (each holds its coroutine and context), and who holds one."""
    done = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and o.done()]
    print(f"  done tasks alive: {len(done):,}")
    if done:
        task = done[len(done) // 2]
        print(f"    e.g. {task!r:.200}")
        for holder in gc.get_referrers(task):
            if holder is done:
                continue
            print(f"    held by {type(holder).__qualname__}: {holder!r:.300}")
            for outer in gc.get_referrers(holder)[:6]:
                if outer is done or (isinstance(outer, list) and len(outer) > 1000):
                    continue
                print(f"      held by {type(outer).__qualname__}: {outer!r:.200}")
    del done


def report(
    args: argparse.Namespace,
    first: tracemalloc.Snapshot,
    garbage_snapshot: tracemalloc.Snapshot,
    second: tracemalloc.Snapshot,
    rss_first: int,
    rss_before_gc: int,
    rss_second: int,
    found: int,
) -> None:
    n = args.connections
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    first, second = first.filter_traces(ignore), second.filter_traces(ignore)
    garbage_snapshot = garbage_snapshot.filter_traces(ignore)
    stats = second.compare_to(first, "traceback")
    total = sum(s.size_diff for s in stats)
    garbage = sum(s.size_diff for s in garbage_snapshot.compare_to(second, "traceback"))
    print(f"\n{n:,} more idle connections ({2 * n:,} in all):")
    print(f"  Python heap per connection (live, after gc.collect): {total / n:,.0f} B")
    print(f"  cyclic garbage per connection before that collection: {garbage / n:,.0f} B")
    print(f"    ({found:,} objects freed by gc.collect())")
    print(
        f"  RSS growth per connection: {(rss_before_gc - rss_first) * 1024 / n:,.0f} B "
        f"(after the collection {(rss_second - rss_first) * 1024 / n:,.0f} B; "
        "tracemalloc's own bookkeeping included)"
    )
    print(f"\n  where (bytes per connection, count per connection), top {args.top}:")
    for stat in stats[: args.top]:
        if stat.size_diff / n < 4:
            break
        print(f"  {stat.size_diff / n:8,.1f} B {stat.count_diff / n:6.2f}x")
        print(where(stat.traceback, args.frames))
    by_file = second.compare_to(first, "filename")
    print("\n  by file of the innermost frame:")
    for stat in by_file[:25]:
        if stat.size_diff / n < 4:
            break
        print(f"  {stat.size_diff / n:8,.1f} B  {stat.traceback[0].filename}")


async def main(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {args.server_cpu})
    log_dir = Path(tempfile.mkdtemp(prefix="bench-idle-heap-"))
    redis = RedisServer(directory=log_dir / "redis").start()
    try:
        await measure(args, redis.url)
    finally:
        redis.cleanup()


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2_000)
    parser.add_argument("--frames", type=int, default=8, help="traceback depth shown")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the web")
    parser.add_argument("--holders", action="store_true", help="who holds done tasks")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.client:
        uvloop.run(client_main(args.client))
        return
    args.depth = max(args.frames, 12)
    uvloop.run(main(args))


if __name__ == "__main__":
    cli()
