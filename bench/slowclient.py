"""What one stalled client costs the web process: RSS growth after 50,000 events with one
normal subscriber, and with one normal plus one stalled subscriber, in the same run.

    python -m bench.slowclient [--events 50000] [--pad 100] [--runs 3]

Each case starts its own web and worker (realtime serve / process) on a fresh Redis
database prefix. The normal client reads everything; the stalled one subscribes, then
never reads again (4 KiB receive buffer). Events go through the HTTP ingest API in
batches of up to 1,000. `unbounded` repeats the stalled case with a backlog bound so large it
never applies (REALTIME_CLIENT_BACKLOG_*), to show what the bound saves.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from bench import procstat
from bench.servers import OURS, Proc, start_server, start_worker
from realtime.core import jsoncodec
from realtime.dev.embedded import RedisServer, free_port

TOPIC = "bench.slow"
SUBSCRIBE = '421["subscribe",{"topic":"' + TOPIC + '"}]'
CASES = {
    "none": {},
    "stalled": {},
    "unbounded": {
        "REALTIME_CLIENT_BACKLOG_BYTES": str(2**40),
        "REALTIME_CLIENT_BACKLOG_PACKETS": str(2**40),
    },
}


async def stalled_client(port: int) -> asyncio.StreamWriter:
    """Connect, subscribe, and never read again; returns the writer (to close it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    for text in ("40", SUBSCRIBE):
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    await asyncio.sleep(0.5)  # its subscribe is answered; from here on it reads nothing
    return writer


async def normal_client(http: aiohttp.ClientSession, port: int) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")
    await ws.receive_str()
    await ws.send_str("40")
    await ws.receive_str()
    await ws.send_str(SUBSCRIBE)
    await ws.receive_str()
    return ws


async def receive(ws: aiohttp.ClientWebSocketResponse, count: int) -> None:
    got = 0
    while got < count:
        frame = await ws.receive_str()
        if frame == "2":
            await ws.send_str("3")
        elif frame.startswith('42["update",'):
            got += len(jsoncodec.loads(frame[2:])[1])


async def one_case(
    redis: RedisServer, env: dict[str, str], stall: bool, events: int, pad: int
) -> float:
    """RSS growth of the web process, MiB."""
    log_dir = Path(tempfile.mkdtemp(prefix="realtime-slowclient-"))
    os.environ.update(env)
    port = free_port()
    web = await start_server(OURS, port, redis.url, {0}, log_dir, "web")
    worker = await start_worker(redis.url, {1}, log_dir)
    procs: list[Proc] = [web, worker]
    try:
        async with aiohttp.ClientSession() as http:
            ws = await normal_client(http, port)
            stalled = await stalled_client(port) if stall else None
            before = procstat.rss_kib(web.pid)
            reading = asyncio.create_task(receive(ws, events))
            padding = "x" * pad
            per_request = max(1, min(1000, 500_000 // (pad + 100)))  # under the body limit
            for start in range(0, events, per_request):
                batch = [
                    {"topic": TOPIC, "data": {"seq": n, "pad": padding}}
                    for n in range(start, min(start + per_request, events))
                ]
                async with http.post(
                    f"http://127.0.0.1:{port}/api/v1/events", data=jsoncodec.dumpb(batch),
                    headers={"Content-Type": "application/json"},
                ) as response:  # fmt: skip
                    assert response.status == 202, await response.text()
            await asyncio.wait_for(reading, 120)
            after = procstat.rss_kib(web.pid)
            if stalled is not None:
                stalled.close()
            await ws.close()
        return (after - before) / 1024
    finally:
        for key in env:
            os.environ.pop(key, None)
        for proc in procs:
            await proc.stop()


async def main(args: argparse.Namespace) -> None:
    redis = RedisServer(directory=Path(tempfile.mkdtemp(prefix="realtime-slowclient-redis-")))
    redis.start()
    growth: dict[str, list[float]] = {case: [] for case in CASES}
    try:
        for run in range(args.runs):
            for case, env in CASES.items():
                async with Redis.from_url(redis.url) as client:
                    await client.flushall()
                mib = await one_case(redis, env, case != "none", args.events, args.pad)
                print(f"[run {run + 1}] {case}: web RSS +{mib:.1f} MiB", file=sys.stderr)
                growth[case].append(mib)
    finally:
        redis.cleanup()
    print(f"web RSS growth after {args.events:,} events of ~{args.pad + 100} bytes "
          f"(median of {args.runs}):")  # fmt: skip
    for case, values in growth.items():
        print(f"  {case:10s} +{statistics.median(values):6.1f} MiB   runs: "
              + ", ".join(f"{v:.1f}" for v in values))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.slowclient", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--pad", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
