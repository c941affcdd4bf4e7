"""The Procfile, read as Heroku reads it: each command run by a shell with only `PORT` and
the app's config vars set, against a real Redis."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from realtime.core.settings import Settings
from realtime.dev.embedded import free_port
from tests.helpers.clients import Collector, post_events
from tests.helpers.processes import ProcessGroup, settings_env

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


def procfile() -> dict[str, str]:
    """Process type -> command line (Heroku's format: `<type>: <command>`)."""
    entries: dict[str, str] = {}
    for line in PROCFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(\S.*)", line.strip())
        assert match, f"not a Procfile line: {line!r}"
        assert match.group(1) not in entries, f"{match.group(1)} declared twice"
        entries[match.group(1)] = match.group(2)
    return entries


@pytest.mark.unit
def test_procfile_declares_web_and_worker_and_no_release_phase() -> None:
    # Consumer groups are created by the workers themselves: nothing needs a release step.
    assert set(procfile()) == {"web", "worker"}


@pytest.mark.system
async def test_procfile_commands_boot_and_serve(
    settings: Settings, processes: ProcessGroup
) -> None:
    commands = procfile()
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)  # where `realtime` is installed
    env = settings_env(settings, PORT=str(port), PATH=f"{venv_bin}:{os.environ['PATH']}")

    web = processes.shell("web", commands["web"], env)
    web.port = port  # the web process must bind $PORT: nothing else tells it the port
    web.wait_ready()
    processes.shell("worker", commands["worker"], env)

    client = await Collector("dashboard").connect(web.url)
    try:
        await client.subscribe("procfile.check")
        ids = await post_events(web.url, [{"topic": "procfile.check", "data": {"n": 1}}])
        events = await client.wait_for(1)
        assert [e["id"] for e in events] == ids
    finally:
        await client.close()
