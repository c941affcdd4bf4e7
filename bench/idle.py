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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path

from bench.ingest import run_cli, start_web
from bench.loadgen import Tally, open_clients
from bench.servers import ours_env
from realtime.dev.embedded import RedisServer, free_port


async def per_connection(
    kind: str, code: str | None, args: argparse.Namespace, redis_url: str, log_dir: Path
) -> float:
    """KiB of server RSS per connected idle client."""
    port = free_port()
    web = await start_web(kind, code, port, args.server_cpu, log_dir, ours_env(redis_url))
    try:
        await asyncio.sleep(1.0)  # start-up allocations settle
        before = web.rss_kib()
        clients = await open_clients(
            [f"http://127.0.0.1:{port}"], args.connections, lambda i: None, Tally()
        )
        try:
            await asyncio.sleep(2.0)
            alive = sum(1 for c in clients.clients if c.is_open)
            grown = web.rss_kib() - before
        finally:
            clients.close()
        if alive < args.connections:
            raise RuntimeError(f"{kind}: only {alive} of {args.connections} connected")
        return grown / alive
    finally:
        await web.stop()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


async def main(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {args.client_cpu})
    log_dir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    server = RedisServer(directory=log_dir / "redis").start()
    kinds: list[tuple[str, str | None]] = [("now", None)]
    if args.baseline:
        kinds.append(("before", args.baseline))
    results: dict[str, list[float]] = {kind: [] for kind, _ in kinds}
    try:
        for n in range(args.runs):
            for kind, code in kinds:
                results[kind].append(await per_connection(kind, code, args, server.url, log_dir))
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


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    run_cli(parser, main)


if __name__ == "__main__":
    cli()
