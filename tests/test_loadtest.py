"""`realtime loadtest` against a real web and worker: what it reports, and its errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from realtime.core import jsoncodec
from realtime.core.settings import Settings
from realtime.dev.embedded import free_port
from tests.helpers.processes import ProcessGroup
from tests.helpers.tokens import INGEST_KEY, INGEST_KEYS, SECRET, hs256

pytestmark = pytest.mark.system

DOCUMENTED_FIELDS = {
    "url", "config", "clients", "connect_ms", "connects_per_s", "published", "delivery",
    "errors", "reconnects", "restart", "ok",
}  # fmt: skip


async def loadtest(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "realtime", "loadtest", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_every_event_reaches_every_client_and_json_has_the_documented_fields(
    processes: ProcessGroup, settings: Settings
) -> None:
    web = processes.web(settings)
    processes.worker(settings)
    code, out, err = await loadtest(
        "--url", web.url, "--clients", "24", "--topics", "4", "--rate", "40",
        "--duration", "2", "--polling-share", "0.25", "--drain", "20", "--json", "--stamped",
    )  # fmt: skip
    assert code == 0, err + out
    result = jsoncodec.loads(out)
    assert set(result) == DOCUMENTED_FIELDS
    assert result["clients"] == {
        "requested": 24, "connected": 24, "websocket": 18, "polling": 6, "failed": 0,
    }  # fmt: skip
    assert result["published"]["events"] == 80
    delivery = result["delivery"]
    assert delivery["expected"] == 80 * 24 // 4  # each event goes to its topic's 6 clients
    assert delivery["delivered"] == delivery["expected"]
    assert (delivery["duplicates"], delivery["gaps"], delivery["loss"]) == (0, 0, 0)
    assert set(delivery["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert delivery["latency_ms"]["p50"] > 0
    assert set(result["connect_ms"]) == {"p50", "p95", "p99", "max"}
    assert result["errors"]["total"] == 0
    assert result["ok"] is True
    assert "done: published 80" in err  # the progress display, as lines when not a TTY


async def test_clients_resume_after_a_restart_mid_run_and_miss_nothing(
    processes: ProcessGroup, settings: Settings
) -> None:
    port = free_port()
    web = processes.web(settings, port=port)
    processes.worker(settings)
    assert web.process is not None
    run = asyncio.create_task(
        loadtest(
            "--url", web.url, "--clients", "10", "--topics", "2", "--rate", "20",
            "--duration", "6", "--restart-at", "1", "--drain", "20",
            "--restart-cmd", f"kill -9 {web.process.pid}", "--json",
        )
    )  # fmt: skip
    # The command only kills; like a supervisor, we bring the instance back.
    await asyncio.to_thread(web.process.wait, 60)
    processes.web(settings, port=port)
    code, out, err = await run
    assert code == 0, err + out
    result = jsoncodec.loads(out)
    restart = result["restart"]
    assert restart["exit_code"] == 0
    assert restart["disconnects"] == 10
    assert restart["reconnected"] == 10
    assert restart["still_down"] == 0
    assert restart["reconnect_ms"]["p50"] > 0
    assert restart["missed"] == 0
    delivery = result["delivery"]
    assert delivery["delivered"] == delivery["expected"] == 600  # 2 topics x 60 x 5 clients
    assert delivery["missed"] == delivery["duplicates"] == 0


async def test_bad_arguments_and_unreachable_targets_get_clear_errors() -> None:
    code, _, err = await loadtest("--clients", "0")
    assert code == 2
    assert "--clients must be >= 1" in err

    code, _, err = await loadtest("--polling-share", "2")
    assert code == 2
    assert "--polling-share must be within 0..1" in err

    code, _, err = await loadtest("--kill-signal", "NOPE")
    assert code == 2
    assert "unknown signal 'NOPE'" in err

    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = await loadtest("--url", url, "--clients", "3", "--duration", "1")
    assert code == 1
    assert f"cannot connect to {url}" in err
    assert "Connection refused" in err
    assert out == ""


def test_help_lists_the_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "realtime", "loadtest", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for option in (
        "--clients",
        "--rate",
        "--polling-share",
        "--stamped",
        "--restart-cmd",
        "--kill-pid",
        "--json",
    ):
        assert option in out


async def test_against_a_deployment_with_auth_on(
    processes: ProcessGroup, settings: Settings
) -> None:
    """`--token` for the clients and `--key` for the producer; without them the run fails
    with the server's reasons, and neither secret appears in the output."""
    secured = settings.with_overrides(insecure=False)
    web = processes.web(secured, REALTIME_JWT_SECRET=SECRET, REALTIME_INGEST_KEYS=INGEST_KEYS)
    processes.worker(secured)
    token = hs256(["loadtest.*"])
    base = ["--url", web.url, "--clients", "4", "--topics", "2", "--rate", "20",
            "--duration", "1", "--drain", "20", "--json"]  # fmt: skip
    code, out, err = await loadtest(*base, "--token", token, "--key", INGEST_KEY)
    assert code == 0, err + out
    result = jsoncodec.loads(out)
    assert result["clients"]["connected"] == 4
    assert result["delivery"]["loss"] == 0
    assert token not in out + err
    assert INGEST_KEY not in out + err
    code, out, err = await loadtest(*base)
    assert code == 1
    assert "A token is required" in err + out
