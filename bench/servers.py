"""The servers under test and their publishers, started as pinned child processes.

- `ours`: `realtime serve` (server core) + `realtime process` (the worker, on the client
  core: it is the publisher side, like the references' publisher processes).
- `python-socketio`: bench/ref/pysio_server.py, stock AsyncServer + AsyncRedisManager.
- `node`: bench/ref/node/server.js, socket.io 4.8 + @socket.io/redis-adapter.

Every process is pinned with sched_setaffinity in the child before exec (what
`taskset -c` does), so the threads it starts later inherit the pinning.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat
from realtime.core import jsoncodec

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "bench" / "ref" / "node"
PREFIX = "bench:"

OURS = "ours"
PYSIO = "python-socketio"
NODE = "node"
SERVER_KINDS = (OURS, PYSIO, NODE)
LABELS = {OURS: "realtime", PYSIO: "python-socketio", NODE: "node socket.io"}


class BenchError(RuntimeError):
    pass


def _pin(cpus: set[int]) -> Any:
    def preexec() -> None:
        os.sched_setaffinity(0, cpus)

    return preexec


def _open_log(path: Path) -> Any:
    return open(path, "ab")  # handed to the child, closed after the spawn


def node_ready() -> str | None:
    """Why the Node reference cannot run, or None when it can."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        return f"run `npm ci` in {NODE_DIR.relative_to(REPO)}"
    return None


@dataclass
class Proc:
    """One pinned child process; its output goes to a log file."""

    name: str
    args: list[str]
    cpus: set[int]
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    stdin_pipe: bool = False
    cwd: Path = REPO  # `python -m realtime` runs the code found here

    async def start(self) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = _open_log(self.log_dir / f"{self.name}.log")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.args,
                stdin=asyncio.subprocess.PIPE if self.stdin_pipe else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if self.stdin_pipe else log,
                stderr=log,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                preexec_fn=_pin(self.cpus),
                start_new_session=True,
                limit=1 << 26,  # answers on stdout: the probe's carry its latencies
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} not started"
        return self.process.pid

    def cpu(self) -> float:
        return procstat.cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return procstat.rss_kib(self.pid)

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = (self.log_dir / f"{self.name}.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def check_alive(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            raise BenchError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """One JSON line to a `stdin_pipe` process, and its one-line answer."""
        process = self.process
        assert process is not None, f"{self.name} not started"
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(jsoncodec.dumpb(message) + b"\n")
        await process.stdin.drain()
        line = await process.stdout.readline()
        if not line:
            raise BenchError(f"{self.name} exited:\n{self.log_tail()}")
        answer: dict[str, Any] = jsoncodec.loads(line)
        return answer

    async def end(self) -> None:
        """Close a `stdin_pipe` process's input (its cue to finish), then stop it."""
        if self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        await self.stop()

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


async def wait_ready(proc: Proc, url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            ok = await asyncio.to_thread(_http_ok, url)
        except OSError:
            ok = False
        if ok:
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"{proc.name} not ready at {url} after {timeout_s:.0f}s:\n{proc.log_tail()}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except urllib.error.URLError:
        return False


def ours_env(redis_url: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "REALTIME_PREFIX": PREFIX,
        "REALTIME_INSECURE": "1",
        "REALTIME_LOG_LEVEL": "WARNING",
        "REALTIME_BLOCK_MS": "1000",
        "PYTHONUNBUFFERED": "1",
    }


async def start_server(
    kind: str,
    port: int,
    redis_url: str,
    cpus: set[int],
    log_dir: Path,
    name: str,
    code: Path | None = None,
) -> Proc:
    """Start one instance of a server kind and wait until it answers. `code`: run ours
    from that checkout (another version, e.g. `git archive main | tar -x -C DIR`)."""
    if kind == OURS:
        args = [sys.executable, "-m", "realtime", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(port)]
        proc = Proc(name, args, cpus, log_dir, ours_env(redis_url), cwd=code or REPO)
        ready = "/readyz"
    elif kind == PYSIO:
        args = [sys.executable, str(REPO / "bench/ref/pysio_server.py"), str(port), redis_url]
        proc = Proc(name, args, cpus, log_dir, {"PYTHONUNBUFFERED": "1"})
        ready = "/readyz"
    elif kind == NODE:
        args = ["node", str(NODE_DIR / "server.js"), str(port), redis_url]
        proc = Proc(name, args, cpus, log_dir)
        ready = "/readyz"
    else:
        raise BenchError(f"unknown server kind {kind!r}")
    await proc.start()
    await wait_ready(proc, f"http://127.0.0.1:{port}{ready}")
    return proc


async def start_worker(
    redis_url: str,
    cpus: set[int],
    log_dir: Path,
    env: dict[str, str] | None = None,
    code: Path | None = None,
) -> Proc:
    """`env`: more variables for the worker alone (e.g. REALTIME_METRICS_PORT); `code`:
    as for `start_server`."""
    args = [sys.executable, "-m", "realtime", "process", "--consumer", "bench-worker"]
    env = {**ours_env(redis_url), **(env or {})}
    return await Proc("worker", args, cpus, log_dir, env, cwd=code or REPO).start()


class Publisher:
    """A publisher process driven over stdin/stdout, one JSON line per job.

    Job: {"topics": [...], "rate": events/s, "count": N, "step": id, "pad": bytes};
    answer: {"published": N, "elapsed_s": S}.
    """

    def __init__(self, proc: Proc) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, kind: str, mode: str, redis_url: str, url: str, cpus: set[int], log_dir: Path
    ) -> Publisher:
        if kind == NODE:
            args = ["node", str(NODE_DIR / "publisher.js"), redis_url]
        else:
            args = [sys.executable, "-m", "bench.publisher", mode, redis_url, url]
        proc = Proc(f"publisher-{mode}", args, cpus, log_dir, ours_env(redis_url), stdin_pipe=True)
        await proc.start()
        return cls(proc)

    async def publish(
        self,
        topics: Sequence[str],
        rate: float,
        count: int,
        step: int,
        pad: int = 0,
        **options: str,
    ) -> dict[str, Any]:
        job: dict[str, Any] = {
            "topics": list(topics),
            "rate": rate,
            "count": count,
            "step": step,
            "pad": pad,
        }
        job.update(options)
        return await self.proc.ask(job)

    async def stop(self) -> None:
        await self.proc.end()
