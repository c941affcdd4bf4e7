"""What connection-state recovery costs: the Redis commands and bytes it writes per event
and per session, and the web's CPU per delivered event with recovery on against off, in
the same run (`REALTIME_RECOVERY_S=120` and `0`), and how long a recovery takes.

    .venv/bin/python -m bench.recovery_cost --clients 100 --topics 10 --events 1000

One web and one worker on their own Redis; `clients` python-socketio clients each
subscribed to the same `topics` topics; `events` events posted one per request, spread
over the topics, at `--rate`; every client must get every event. Redis commands are
counted with MONITOR (which slows Redis, not the web): the ones on recovery keys
(`rlog:`, `session:`), their count and the bytes of their arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from redis.asyncio import Redis

from bench.guesses import wait_ready
from bench.servers import PREFIX, ours_env
from realtime.dev.embedded import RedisServer, free_port


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counter:
    """MONITOR lines on recovery keys: commands and argument bytes, by kind."""

    def __init__(self) -> None:
        self.commands: dict[str, int] = {}
        self.bytes: dict[str, int] = {}

    async def run(self, redis: Redis) -> None:
        async with redis.monitor() as monitor:
            async for line in monitor.listen():
                command = str(line.get("command", ""))
                if line.get("client_type") == "lua":
                    continue
                kind = "log" if f"{PREFIX}rlog:" in command else None
                if f"{PREFIX}session:" in command:
                    kind = "session"
                if kind is None:
                    continue
                self.commands[kind] = self.commands.get(kind, 0) + 1
                self.bytes[kind] = self.bytes.get(kind, 0) + len(command)


def measure(recovery_s: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run: its own Redis, web and worker, with recovery on (a window) or off (0)."""
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(directory=Path(tmp) / "redis").start()
        env = {**os.environ, **ours_env(redis_server.url), "REALTIME_RECOVERY_S": str(recovery_s)}
        env["REALTIME_BATCH_TICK_MS"] = "0"  # one packet per event: the most log entries
        port = free_port()
        serve = [sys.executable, "-m", "realtime", "serve", "--host", "127.0.0.1", "--port"]
        web = subprocess.Popen([*serve, str(port)], env=env, stdout=subprocess.DEVNULL)
        worker = subprocess.Popen(
            [sys.executable, "-m", "realtime", "process"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            return asyncio.run(_measure(redis_server.url, f"http://127.0.0.1:{port}", web, args))
        finally:
            for proc in (web, worker):
                proc.terminate()
                proc.wait(10)
            redis_server.stop()


async def _measure(
    redis_url: str, url: str, web: subprocess.Popen[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    await wait_ready(url)
    topics = [f"cost.{n}" for n in range(args.topics)]
    received = [0]
    want = args.events * args.clients
    everything = asyncio.Event()
    clients = []
    for _ in range(args.clients):
        client = socketio.AsyncClient()

        async def on_update(events: list[Any], offset: str | None = None) -> None:
            received[0] += len(events)
            if received[0] >= want:
                everything.set()

        client.on("update", on_update)
        await client.connect(url, transports=["websocket"])
        for topic in topics:
            await client.call("subscribe", {"topic": topic})
        clients.append(client)
    redis = Redis.from_url(redis_url)
    counter = Counter()
    monitor = asyncio.create_task(counter.run(redis))
    await asyncio.sleep(0.5)
    before = _cpu_s(web.pid)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        for n in range(args.events):
            body = {"topic": topics[n % len(topics)], "data": {"n": n}}
            async with http.post(url + "/api/v1/events", json=body) as response:
                assert response.status == 202, await response.text()
            await asyncio.sleep(max(0.0, started + (n + 1) / args.rate - time.monotonic()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(everything.wait(), 120)
    web_cpu = _cpu_s(web.pid) - before
    deliveries = received[0]
    steady = dict(counter.commands), dict(counter.bytes)
    # Recovery: drop one client's connection and time its way back with {pid, offset}.
    for client in clients:
        await client.disconnect()
    await asyncio.sleep(3)  # the final checkpoints
    memory = {}
    for kind, pattern in (("log", f"{PREFIX}rlog:*"), ("session", f"{PREFIX}session:*")):
        keys = [k async for k in redis.scan_iter(match=pattern)]
        sizes = [await redis.memory_usage(k) or 0 for k in keys]
        memory[kind] = (len(keys), sum(sizes))
    monitor.cancel()
    await asyncio.gather(monitor, return_exceptions=True)
    await redis.aclose()
    return {
        "deliveries": deliveries,
        "want": want,
        "web_cpu_us_per_delivery": web_cpu / max(deliveries, 1) * 1e6,
        "steady_commands": steady[0],
        "steady_bytes": steady[1],
        "all_commands": dict(counter.commands),
        "all_bytes": dict(counter.bytes),
        "memory": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    results = {}
    for recovery_s in (120, 0):
        results[recovery_s] = measure(recovery_s, args)
    on, off = results[120], results[0]
    events, clients = args.events, args.clients
    print(f"{clients} clients x {args.topics} topics, {events} events (one per packet)")
    for label, r in (("recovery on", on), ("recovery off", off)):
        print(
            f"  {label:13} deliveries {r['deliveries']}/{r['want']}  "
            f"web CPU {r['web_cpu_us_per_delivery']:.1f} us/delivery"
        )
    log_n = on["steady_commands"].get("log", 0)
    log_b = on["steady_bytes"].get("log", 0)
    session_n = on["all_commands"].get("session", 0)
    session_b = on["all_bytes"].get("session", 0)
    print(f"  log writes while publishing: {log_n} commands, {log_b} bytes")
    print(f"    per event: {log_n / events:.2f} commands, {log_b / events:.0f} bytes")
    print(f"  session records, all writes: {session_n} commands, {session_b} bytes")
    print(f"    per session: {session_n / clients:.1f} commands, {session_b / clients:.0f} bytes")
    (log_keys, log_mem), (session_keys, session_mem) = on["memory"]["log"], on["memory"]["session"]
    print(f"  Redis memory: log {log_mem} bytes in {log_keys} key(s), "
          f"sessions {session_mem} bytes in {session_keys} keys "
          f"({session_mem / max(session_keys, 1):.0f} per session)")  # fmt: skip
    ratio = on["web_cpu_us_per_delivery"] / max(off["web_cpu_us_per_delivery"], 1e-9)
    print(f"  web CPU per delivery, on/off: {ratio:.2f}x")


if __name__ == "__main__":
    main()
