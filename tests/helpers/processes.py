"""Real `realtime` processes for tests: start, wait until healthy, stop, kill, read logs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from realtime.core.settings import Settings, default_consumer_name, environment_variables
from realtime.dev.embedded import free_port


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a process needs to run with these settings."""
    ours = environment_variables()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_") and k not in ours}
    # Each process names its own consumer (host and pid), as in production.
    env.update(settings.with_overrides(consumer=default_consumer_name()).to_env())
    env.update(PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def wait_http(
    url: str, timeout_s: float = 20.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")


class RealtimeProcess:
    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self) -> RealtimeProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        self.process = subprocess.Popen(
            [sys.executable, "-m", "realtime", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.name} has no port"
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 20.0) -> RealtimeProcess:
        wait_http(self.url + "/readyz", timeout_s, self.process)
        return self

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class ShellProcess(RealtimeProcess):
    """A shell command line in a session of its own; signals go to the whole group."""

    def __init__(self, name: str, command: str, env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(name, [], env, log_path)
        self.command = command

    def start(self) -> ShellProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def signal(self, sig: int) -> None:
        # The group may outlive the shell (a command it did not exec), so always signal it.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()


class ProcessGroup:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[RealtimeProcess] = []

    def _add(self, name: str, args: list[str], env: Mapping[str, str]) -> RealtimeProcess:
        proc = RealtimeProcess(name, args, env, self.log_dir / f"{name}-{len(self.started)}.log")
        self.started.append(proc)
        return proc

    def web(
        self, settings: Settings, *, port: int | None = None, ready: bool = True, **extra_env: str
    ) -> RealtimeProcess:
        """A web process; waits for /readyz (or only /healthz with ready=False)."""
        port = port or free_port()
        proc = self._add(
            "web",
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            settings_env(settings, **extra_env),
        )
        proc.port = port
        proc.start()
        if not ready:
            wait_http(proc.url + "/healthz", process=proc.process)
            return proc
        return proc.wait_ready()

    def shell(self, name: str, command: str, env: Mapping[str, str]) -> ShellProcess:
        """A command line run by /bin/sh, as a Procfile's is."""
        proc = ShellProcess(name, command, env, self.log_dir / f"{name}-{len(self.started)}.log")
        self.started.append(proc)
        return proc.start()

    def worker(self, settings: Settings, *extra_args: str, **extra_env: str) -> RealtimeProcess:
        proc = self._add("worker", ["process", *extra_args], settings_env(settings, **extra_env))
        return proc.start()

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(
            f"----- {p.name} ({p.log_path.name}) -----\n{p.log()}" for p in self.started
        )
