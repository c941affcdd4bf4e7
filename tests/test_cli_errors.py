"""The command-line clients never show a traceback for a user's mistake: each mistake is
one line saying what went wrong and what to do, with a non-zero exit (2: the command
line; 1: the server or the network), and a traceback only with --debug."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.settings import IngestKeySpec, Settings
from realtime.dev.embedded import free_port
from realtime.ingest.publish_keys import IngestKeys
from tests.helpers.inprocess import running_app

pytestmark = pytest.mark.system

KEY = "k" * 32
METRICS_ONLY = "m" * 32


@dataclass
class Run:
    code: int
    out: str
    err: str


async def realtime(*args: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "realtime", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def one_line(run: Run, code: int, *parts: str) -> None:
    assert run.code == code, run
    assert "Traceback" not in run.err + run.out, run.err
    [line] = run.err.splitlines()
    for part in parts:
        assert part in line, line


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["publish", "metrics.CPU", "{}"], ["'metrics.CPU' is not a topic name"]),
        (["publish", "metrics.cpu", "{"], ["JSON is not valid JSON"]),
        (["publish", "metrics.cpu", "[1, 2]"], ["JSON must be an object"]),
        (["publish", "--url", "ftp://host", "a", "{}"], ["is not a server address"]),
        (["publish", "--url", "host:99999", "a", "{}"], ["has an invalid port"]),
        (["watch", "--since", "bogus", "metrics.cpu"], ["--since 'bogus' is not an event id"]),
        (["watch", "Bad Topic"], ["'Bad Topic' is not a topic name"]),
    ],
)
async def test_a_bad_command_line_is_one_line_and_exit_2(args: list[str], parts: list[str]) -> None:
    one_line(await realtime(*args), 2, f"realtime {args[0]}: ", *parts)


async def test_no_server_says_so_and_debug_shows_the_traceback() -> None:
    port = free_port()
    run = await realtime("publish", "--url", f"127.0.0.1:{port}", "metrics.cpu", "{}")
    one_line(run, 1, f"cannot connect to 127.0.0.1:{port} (connection refused)", "running?")
    debug = await realtime("publish", "--debug", "--url", f"127.0.0.1:{port}", "a", "{}")
    assert debug.code == 1
    assert "Traceback" in debug.err
    assert "ClientConnectorError" in debug.err


async def test_the_servers_refusals_are_readable(settings: Settings, redis: Redis) -> None:
    keys = (IngestKeySpec(KEY), IngestKeySpec(METRICS_ONLY, ("metrics.*",)))
    secured = settings.with_overrides(ingest_keys=keys, ingest_rate=5)
    async with running_app(secured) as url:
        address = url.removeprefix("http://")  # host:port, no scheme: accepted
        ok = await realtime("publish", "--url", address, "--key", KEY, "metrics.cpu", "{}")
        assert ok.code == 0, ok
        assert '"ids"' in ok.out

        no_key = await realtime("publish", "--url", url, "metrics.cpu", "{}")
        one_line(no_key, 1, "refused: unauthorized: ", "pass --key, or set REALTIME_INGEST_KEY")

        other = await realtime("publish", "--url", url, "--key", METRICS_ONLY, "orders.x", "{}")
        one_line(other, 1, "refused: forbidden: ")

        too_late = await realtime(
            "publish", "--url", url, "--key", METRICS_ONLY, "--ts", "-5", "metrics.cpu", "{}"
        )
        one_line(too_late, 1, "refused: invalid: ", "ts: ")

        # The key's second is used up for a while (a 1 s window would race the CLI).
        name = IngestKeys((IngestKeySpec(KEY),)).authenticate(f"Bearer {KEY}").name
        await redis.set(Keys(settings.prefix).ingest_rate(name), 10, px=60_000)
        limited = await realtime("publish", "--url", url, "--key", KEY, "metrics.cpu", "{}")
        one_line(limited, 1, "refused: limit: ", "retry in ")
