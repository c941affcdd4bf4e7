"""Benchmark: how fast one client can guess credentials, with the failed-credential
throttle off (`REALTIME_AUTH_FAILURES=0`, the reference: as before issue 15) and on (the
defaults), against `realtime serve` processes started here, in one run.

    .venv/bin/python -m bench.guesses [--seconds 10] [--runs 3] [--concurrency 8]

Three doors, each guessed from one client address (127.0.0.2) with `--concurrency`
requests in flight: the Admin UI password (Socket.IO CONNECT to `/admin` over
websockets), `/metrics` Basic auth, and publish keys (`POST /api/v1/events`). A guess
counts when it was checked (answered 401 / "authentication failed"); refusals unchecked
(429, "Too many failed attempts") are counted apart. Also: right-key ingest requests/s
from 127.0.0.1, throttle off and on (a success pays one Redis read). A fresh server and
key prefix per door and setting. Medians of --runs, with min-max and the ratio on/off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from realtime.core import jsoncodec
from realtime.dev.embedded import RedisServer, free_port

USER, PASSWORD = "admin", "bench-admin-password-" + "x" * 12
KEY = "bench-key-" + "k" * 32
BODY = jsoncodec.dumpb({"topic": "metrics.cpu", "data": {"value": 1}})
BIN = Path(sys.executable).with_name("realtime")
GUESSER = "127.0.0.2"  # Linux routes all of 127/8 to loopback
OWNER = "127.0.0.1"  # the right publish key, measured alone


def start_server(
    redis_url: str, prefix: str, throttle: bool
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "REALTIME_PREFIX": prefix,
        "PORT": str(port),
        "REALTIME_HOST": "127.0.0.1",
        "REALTIME_JWT_SECRET": "s" * 40,
        "REALTIME_INGEST_KEYS": KEY,
        "REALTIME_INGEST_RATE": "0",
        "REALTIME_ADMIN_USER": USER,
        "REALTIME_ADMIN_PASSWORD": PASSWORD,
        "REALTIME_LOG_LEVEL": "WARNING",
        "REALTIME_AUTH_FAILURES": "5" if throttle else "0",
    }
    process = subprocess.Popen([str(BIN), "serve"], env=env, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


async def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


Attempt = Callable[[int], Awaitable[str]]


async def hammer(
    make: Callable[[], Awaitable[tuple[Attempt, Callable[[], Awaitable[None]]]]],
    seconds: float,
    concurrency: int,
) -> Counter[str]:
    """`concurrency` loops of attempts for `seconds`; the outcomes counted."""
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def loop(worker: int) -> None:
        attempt, close = await make()
        try:
            n = 0
            while time.monotonic() < deadline:
                outcomes[await attempt(worker * 1_000_000 + n)] += 1
                n += 1
        finally:
            await close()

    await asyncio.gather(*(loop(w) for w in range(concurrency)))
    return outcomes


Door = Callable[[], Awaitable[tuple[Attempt, Callable[[], Awaitable[None]]]]]


def session_from(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


def http_door(
    url: str, door: str, source: str
) -> Callable[[], Awaitable[tuple[Attempt, Callable[[], Awaitable[None]]]]]:
    async def make() -> tuple[Attempt, Callable[[], Awaitable[None]]]:
        http = session_from(source)

        async def attempt(n: int) -> str:
            if door == "metrics":
                auth = aiohttp.encode_basic_auth(USER, f"guess-{n}")
                request = http.get(f"{url}/metrics", headers={"Authorization": auth})
            elif door == "ingest":
                headers = {"Authorization": f"Bearer guess-{n:024d}"}
                request = http.post(f"{url}/api/v1/events", data=BODY, headers=headers)
            else:  # the right key
                headers = {"Authorization": f"Bearer {KEY}"}
                request = http.post(f"{url}/api/v1/events", data=BODY, headers=headers)
            async with request as response:
                await response.read()
                return str(response.status)

        return attempt, http.close

    return make


def admin_door(
    url: str, source: str
) -> Callable[[], Awaitable[tuple[Attempt, Callable[[], Awaitable[None]]]]]:
    async def make() -> tuple[Attempt, Callable[[], Awaitable[None]]]:
        http = session_from(source)
        ws = await http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket")
        await ws.receive_str()  # the OPEN packet

        async def attempt(n: int) -> str:
            auth = jsoncodec.dumps({"username": USER, "password": f"guess-{n}"})
            await ws.send_str(f"40/admin,{auth}")
            while True:
                message = await ws.receive_str()
                if message == "2":
                    await ws.send_str("3")
                    continue
                if "Too many" in message:
                    return "429"
                return "401" if message.startswith("44/admin") else message[:20]

        async def close() -> None:
            await ws.close()
            await http.close()

        return attempt, close

    return make


DOORS = ("admin", "metrics", "ingest", "ingest_ok")


async def one_run(
    redis_url: str, seconds: float, concurrency: int, run: int, doors: list[str]
) -> dict[str, dict[str, float]]:
    """{door: {"off": per s, "on": per s, "on_refused": per s}} for one run: a fresh
    server (and key prefix) per door and setting, off and on interleaved."""
    result: dict[str, dict[str, float]] = {d: {} for d in doors}
    for door in doors:
        for throttle in (False, True):
            label = "on" if throttle else "off"
            process, url = start_server(redis_url, f"bg{run}{door}{label}:", throttle)
            try:
                await wait_ready(url)
                source = OWNER if door == "ingest_ok" else GUESSER
                make = admin_door(url, source) if door == "admin" else http_door(url, door, source)
                outcomes = await hammer(make, seconds, concurrency)
            finally:
                process.terminate()
                process.wait(10)
            wanted = "202" if door == "ingest_ok" else "401"
            result[door][label] = outcomes[wanted] / seconds
            result[door][f"{label}_refused"] = outcomes["429"] / seconds
            others = set(outcomes) - {wanted, "429"}
            if others:
                print(f"  {door} {label}: unexpected answers {dict(outcomes)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--doors", default=",".join(DOORS), help=f"a subset of {','.join(DOORS)}")
    args = parser.parse_args()
    doors = [d for d in args.doors.split(",") if d in DOORS]
    redis = RedisServer().start()
    try:
        runs = [
            asyncio.run(one_run(redis.url, args.seconds, args.concurrency, n, doors))
            for n in range(args.runs)
        ]
    finally:
        redis.stop()
    print(
        f"one client, {args.concurrency} in flight, {args.seconds:g} s per door; "
        f"medians of {args.runs} (min-max)"
    )
    header = ("door", "throttle off /s", "throttle on /s", "on: 429 /s", "on/off")
    print(f"{header[0]:10} {header[1]:>22} {header[2]:>22} {header[3]:>12} {header[4]:>8}")
    for door in doors:
        cells = []
        for label in ("off", "on"):
            values = [r[door][label] for r in runs]
            cells.append(
                f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"
            )
        refused = statistics.median(r[door]["on_refused"] for r in runs)
        ratios = [r[door]["on"] / r[door]["off"] for r in runs if r[door]["off"]]
        ratio = f"{statistics.median(ratios):.4f}x" if ratios else "-"
        print(f"{door:10} {cells[0]:>22} {cells[1]:>22} {refused:>12,.0f} {ratio:>8}")


if __name__ == "__main__":
    main()
