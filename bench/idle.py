"""Benchmark: memory per idle connection of this checkout's web, and of another's in
the same run.

    .venv/bin/python -m bench.idle [--connections 10000] [--runs 3] [--baseline DIR]

Starts Redis and, one at a time, `realtime serve` of this checkout (`now`) and, with
`--baseline DIR` (e.g. `git archive main | tar -x -C DIR`), of the code in DIR
(`before`), pinned to --server-cpu; opens --connections websocket clients from this
process (Socket.IO connected to `/`, offering permessage-deflate as browsers do, 200
connecting at a time), waits 2 s and reads the server's RSS growth per connection, as
`python -m bench --scenarios idle` does. Medians of --runs with min-max, and the ratio
of now to before per run.

Past 15,000 connections (e.g. `--connections 50000 --runs 1`) it raises this process's
open-file limit (the webs inherit it; raising the hard limit needs root with
CAP_SYS_RESOURCE, which containers often lack: then it says so), connects from
127.0.0.2, 127.0.0.3, ... (each local address has ~28,000 ephemeral ports) and prints
its progress. It also prints what the kernel's TCP buffers held meanwhile
(/proc/net/sockstat: kernel memory, not the web's RSS), as a note.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bench.ingest import run_cli, start_web
from bench.loadgen import Clients, Tally, open_clients
from bench.servers import ours_env
from realtime.dev.embedded import RedisServer, free_port

PORTS_PER_SOURCE = 15_000  # of the ~28,000 ephemeral ports of a local address
STEP = 5_000  # connections opened between progress lines


def sources(connections: int) -> list[str]:
    """Local addresses to connect from: none (the default) up to PORTS_PER_SOURCE."""
    if connections <= PORTS_PER_SOURCE:
        return []
    return [f"127.0.0.{2 + n}" for n in range(math.ceil(connections / PORTS_PER_SOURCE))]


def raise_open_files(connections: int) -> None:
    """Room for `connections` sockets in this process and in the webs it starts."""
    wanted = connections + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard < wanted:
        try:  # root with CAP_SYS_RESOURCE may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, PermissionError):
            raise SystemExit(
                f"{connections:,} connections need {wanted:,} open files; the hard limit is "
                f"{hard:,} and cannot be raised here (no CAP_SYS_RESOURCE): at most "
                f"{hard - 512:,} connections"
            ) from None
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def tcp_memory_kib() -> int:
    """The kernel's TCP buffer memory now (/proc/net/sockstat `TCP: ... mem` pages)."""
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()
                pages = int(fields[fields.index("mem") + 1])
                return pages * resource.getpagesize() // 1024
    return 0


async def connect_all(url: str, args: argparse.Namespace, kind: str) -> list[Clients]:
    """Open --connections clients, STEP at a time past STEP, saying how far it got."""
    spread_over = sources(args.connections)
    opened: list[Clients] = []
    started = time.monotonic()
    left = args.connections
    while left > 0:
        n = min(left, STEP) if args.connections > STEP else left
        opened.append(await open_clients([url], n, lambda i: None, Tally(), sources=spread_over))
        left -= n
        if args.connections > STEP:
            done = sum(len(c.clients) for c in opened)
            print(
                f"  {kind}: {done:,} of {args.connections:,} connected "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    return opened


async def per_connection(
    kind: str, code: str | None, args: argparse.Namespace, redis_url: str, log_dir: Path
) -> tuple[float, float]:
    """KiB of server RSS per connected idle client, and of kernel TCP memory (a note)."""
    port = free_port()
    # Past the default connection limit (10,000) when asked for more.
    env = ours_env(redis_url) | {"REALTIME_MAX_CONNECTIONS": str(max(args.connections, 10_000))}
    web = await start_web(kind, code, port, args.server_cpu, log_dir, env)
    try:
        await asyncio.sleep(1.0)  # start-up allocations settle
        before = web.rss_kib()
        tcp_before = tcp_memory_kib()
        opened = await connect_all(f"http://127.0.0.1:{port}", args, kind)
        try:
            await asyncio.sleep(2.0)
            alive = sum(1 for c in opened for client in c.clients if client.is_open)
            grown = web.rss_kib() - before
            tcp = tcp_memory_kib() - tcp_before
        finally:
            for clients in opened:
                clients.close()
        if alive < args.connections:
            raise RuntimeError(f"{kind}: only {alive} of {args.connections} connected")
        return grown / alive, tcp / alive
    finally:
        await web.stop()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


async def main(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {args.client_cpu})
    raise_open_files(args.connections)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    server = RedisServer(directory=log_dir / "redis").start()
    kinds: list[tuple[str, str | None]] = [("now", None)]
    if args.baseline:
        kinds.append(("before", args.baseline))
    results: dict[str, list[float]] = {kind: [] for kind, _ in kinds}
    kernel: list[float] = []
    try:
        for n in range(args.runs):
            for kind, code in kinds:
                rss, tcp = await per_connection(kind, code, args, server.url, log_dir)
                results[kind].append(rss)
                kernel.append(tcp)
            print(f"run {n + 1}/{args.runs} done", flush=True)
    finally:
        server.cleanup()
    print(
        f"\nidle websocket connections: {args.connections:,}; server RSS growth per "
        f"connection, KiB, median (min-max) of {args.runs} runs"
    )
    for kind, values in results.items():
        print(f"{kind:<8}{spread(values):>28}")
    if args.baseline:
        ratios = [a / b for a, b in zip(results["now"], results["before"], strict=True)]
        print(f"now against before: {spread(ratios)}x")
    print(
        f"note: kernel TCP buffer memory per connection (both ends, /proc/net/sockstat, "
        f"not in the RSS above): {spread(kernel)} KiB"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    run_cli(parser, main)


if __name__ == "__main__":
    cli()
