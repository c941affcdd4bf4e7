"""`realtime dev`: the whole system in one command for a newcomer.

Starts an embedded Redis when `REDIS_URL` is unset, one web and one worker process,
feeds demo metrics, prints the URL, and on Ctrl-C stops everything it started.

It runs without authentication (REALTIME_INSECURE=1, said once by `dev` itself) and binds
127.0.0.1 only, so nothing outside this machine can reach it. Its children die with it,
even when it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
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
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """In a child between fork and exec: SIGTERM it when the process that started it dies,
    even by SIGKILL, so `dev` never leaves a web, worker or Redis behind (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _spawn(args: list[str], env: Mapping[str, str]) -> asyncio.subprocess.Process:
    # A session of their own: Ctrl-C reaches only us, and we stop them in order.
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "realtime",
        *args,
        env=dict(env),
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


def port_in_use(port: int, host: str = "127.0.0.1") -> str | None:
    """Why `port` cannot be served (naming the process that listens on it, where this
    user may know it), or None if it is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = exc.strerror or str(exc)
        else:
            return None
    return f"port {port} is not free ({reason}){_listener(port)}"


def _listener(port: int) -> str:
    try:
        import psutil
    except ImportError:
        return ""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    break
                command = " ".join(psutil.Process(conn.pid).cmdline()[:4])
                return f": pid {conn.pid} listens on it ({command})"
    return ""


def next_steps(url: str) -> list[str]:
    """Two commands that work as printed, from any shell (no activated venv needed)."""
    script = Path(sys.executable).with_name("realtime")
    command = str(script) if script.exists() else f"{sys.executable} -m realtime"
    return [
        f"  {command} watch --url {url} metrics.cpu",
        f"  {command} publish --url {url} metrics.cpu '{{\"value\": 42}}'",
    ]


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
    busy = port_in_use(port)
    if busy:
        print(f"realtime dev: {busy}; stop it, or run: realtime dev --port N", file=sys.stderr)
        return 1
    redis: RedisServer | None = None
    if not base_env.get("REDIS_URL"):
        try:
            redis = RedisServer(preexec_fn=die_with_parent).start()
        except RedisServerError as exc:
            print(f"realtime dev: {exc}", file=sys.stderr, flush=True)
            return 1
        base_env["REDIS_URL"] = redis.url
    base_env["REALTIME_INSECURE"] = "1"
    # The children's INFO lines would scroll the URL away; warnings and errors still show.
    base_env.setdefault("REALTIME_LOG_LEVEL", "WARNING")
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
            await _spawn(
                ["serve", "--host", "127.0.0.1", "--port", str(port), "--local-dev"], base_env
            )
        )
        children.append(await _spawn(["process"], base_env))
        await _wait_ready(url, children)
        where = (
            f"embedded {redis.binary} at {redis.url}"
            if redis
            else redact_url(base_env["REDIS_URL"])
        )
        print(
            "realtime dev: a local setup with no authentication, reachable from this "
            "machine only (127.0.0.1)",
            flush=True,
        )
        dashboard_dir = base_env.get("REALTIME_DASHBOARD_DIR")
        if not is_built(Path(dashboard_dir) if dashboard_dir else None):
            print(
                "realtime dev: the dashboard is not built (needs npm: make dashboard); / says how",
                flush=True,
            )
        if demo:
            print(f"realtime dev: demo metrics on {', '.join(DEMO_TOPICS)}", flush=True)
        print("realtime dev: Ctrl-C stops everything. Next, in another shell:", flush=True)
        print("\n".join(next_steps(url)), flush=True)
        # Last, so it is what the terminal shows.
        print(f"realtime dev: open {url}/  (Redis: {where})", flush=True)
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
