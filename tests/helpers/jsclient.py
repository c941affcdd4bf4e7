"""The real socket.io JS client (npm `socket.io-client` 4.x) under a Python test's control.

`tests/js/driver.mjs` runs one client in a `node` process; commands go in as JSON lines
on stdin, replies and everything the socket reports come back as JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "js" / "driver.mjs"
NODE_MODULES = ROOT / "node_modules"


def require_node() -> str:
    """The `node` binary with the locked npm packages installed, or skip (fail on CI).

    `.ci/run` and `make test` run `npm ci`; a Python-only checkout without Node skips the
    JS suite with the reason, while CI (which must run it) fails instead.
    """
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not on PATH"
    elif not (NODE_MODULES / "socket.io-client").is_dir():
        missing = "node_modules is missing: run `npm ci` (make test does)"
    if missing is None:
        assert node is not None
        return node
    if os.environ.get("CI"):
        pytest.fail(f"JS client suite cannot run on CI: {missing}")
    pytest.skip(missing)


class JsClient:
    """One socket.io-client in a node process; `notes` is everything it reported."""

    def __init__(self, node: str, name: str = "js") -> None:
        self.node = node
        self.name = name
        self.notes: list[dict[str, Any]] = []
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._changed = asyncio.Condition()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> JsClient:
        self._proc = await asyncio.create_subprocess_exec(
            self.node, str(DRIVER),
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,  # stderr: inherited, so pytest shows it on failure
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            message = json.loads(line)
            if "id" in message:
                future = self._replies.pop(message["id"])
                if message["ok"]:
                    future.set_result(message["result"])
                else:
                    future.set_exception(AssertionError(f"{self.name}: {message['error']}"))
                continue
            async with self._changed:
                self.notes.append(message)
                self._changed.notify_all()
        for future in self._replies.values():
            future.set_exception(AssertionError(f"{self.name}: node exited (see its stderr)"))

    async def request(self, cmd: str, timeout: float = 20.0, **args: Any) -> Any:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[self._next_id] = future
        line = json.dumps({"id": self._next_id, "cmd": cmd, **args}) + "\n"
        self._proc.stdin.write(line.encode())
        await self._proc.stdin.drain()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no reply to {cmd} within {timeout}s") from None

    async def connect(self, url: str, **options: Any) -> dict[str, Any]:
        """Connect with socket.io-client options (`transports`, `auth`, ...)."""
        result: dict[str, Any] = await self.request("connect", url=url, options=options)
        return result

    async def connect_helper(
        self,
        url: str,
        subscribe_options: dict[str, Any] | None = None,
        *,
        legacy: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """Connect with `realtime/static/realtime-client.js` managing subscriptions
        (`legacy`: as with a socket.io-client older than 4.6, no native recovery)."""
        result: dict[str, Any] = await self.request(
            "connect", url=url, options=options, helper=True,
            subscribeOptions=subscribe_options or {}, legacy=legacy,
        )  # fmt: skip
        return result

    async def emit(self, event: str, data: Any) -> Any:
        return await self.request("emit", event=event, data=data)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [n for n in self.notes if n["event"] == kind]

    def events(self, topic: str | None = None) -> list[dict[str, Any]]:
        """Topic events received, in arrival order (raw `update` lists or helper output)."""
        found = [e for n in self.notes if n["event"] in ("update", "events") for e in n["events"]]
        return [e for e in found if topic is None or e["topic"] == topic]

    async def wait_until(
        self, check: Callable[[JsClient], bool], what: str, timeout: float = 20.0
    ) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: check(self)), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"{self.name}: {what} not seen within {timeout}s; it reported: "
                    f"{[n['event'] for n in self.notes][-40:]}"
                ) from None

    async def wait_events(self, count: int, topic: str | None = None) -> list[dict[str, Any]]:
        await self.wait_until(
            lambda c: len(c.events(topic)) >= count, f"{count} events on {topic or 'any topic'}"
        )
        return self.events(topic)

    async def close(self) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            await self._reader
