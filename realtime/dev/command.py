"""`realtime dev`: the whole system in one command for a newcomer.

Starts an embedded Redis when `REDIS_URL` is unset, one web and one worker process,
feeds demo metrics, prints the URL, and on Ctrl-C stops everything it started.

It runs without authentication (REALTIME_INSECURE=1: the web process warns about it on
start) and binds 127.0.0.1 only, so nothing outside this machine can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from realtime.core.logs import redact_url
from realtime.dev.demo import DEMO_TOPICS, run_demo_feed
from realtime.dev.embedded import RedisServer, RedisServerError
from realtime.web.dashboard import is_built

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


async def _spawn(args: list[str], env: Mapping[str, str]) -> asyncio.subprocess.Process:
    # A session of their own: Ctrl-C reaches only us, and we stop them in order.
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "realtime", *args, env=dict(env), start_new_session=True
    )


async def _wait_ready(url: str, children: list[asyncio.subprocess.Process]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            for child in children:
                if child.returncode is not None:
                    raise RuntimeError(f"a child process exited with status {child.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"web process not ready at {url} after {READY_TIMEOUT_S:.0f}s")


async def _stop(children: list[asyncio.subprocess.Process]) -> None:
    for child in children:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            await asyncio.wait_for(child.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            child.kill()
            await child.wait()


async def run_dev(
    port: int,
    *,
    demo: bool = True,
    env: Mapping[str, str] | None = None,
    ingest_key: str = "",
) -> int:
    base_env = dict(os.environ if env is None else env)
    redis: RedisServer | None = None
    if not base_env.get("REDIS_URL"):
        try:
            redis = RedisServer().start()
        except RedisServerError as exc:
            print(f"realtime dev: {exc}", file=sys.stderr, flush=True)
            return 1
        base_env["REDIS_URL"] = redis.url
    base_env["REALTIME_INSECURE"] = "1"
    # One web instance, so nowhere for its clients to go: Ctrl-C stops it at once.
    base_env.setdefault("REALTIME_DRAIN_S", "0")
    base_env.setdefault("REALTIME_CORS_ORIGINS", f"http://localhost:{port},http://127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    children: list[asyncio.subprocess.Process] = []
    try:
        children.append(
            await _spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], base_env)
        )
        children.append(await _spawn(["process"], base_env))
        await _wait_ready(url, children)
        where = (
            f"embedded {redis.binary} at {redis.url}"
            if redis
            else redact_url(base_env["REDIS_URL"])
        )
        print(f"realtime dev: open {url}/  (Redis: {where})", flush=True)
        dashboard_dir = base_env.get("REALTIME_DASHBOARD_DIR")
        if not is_built(Path(dashboard_dir) if dashboard_dir else None):
            print(
                "realtime dev: the dashboard is not built (needs npm: make dashboard); / says how",
                flush=True,
            )
        if demo:
            print(
                f"realtime dev: demo metrics on {', '.join(DEMO_TOPICS)}; "
                f"try: realtime watch --url {url} metrics.cpu",
                flush=True,
            )
        print("realtime dev: Ctrl-C stops everything", flush=True)
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
        tasks += [asyncio.create_task(child.wait()) for child in children]
        if demo:
            tasks.append(asyncio.create_task(run_demo_feed(url, stop, key=ingest_key)))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in tasks:
            task.cancel()
        failed = [c for c in children if c.returncode not in (None, 0)]
        if failed:
            print(
                f"realtime dev: a child process exited with status {failed[0].returncode}",
                flush=True,
            )
            return 1
        return 0
    except RuntimeError as exc:
        print(f"realtime dev: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        await _stop(children)
        if redis is not None:
            redis.cleanup()
        print("realtime dev: stopped", flush=True)
