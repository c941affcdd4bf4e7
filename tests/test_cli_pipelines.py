"""`realtime pipelines check` and the worker's start-up validation, as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

GOOD = """
pipelines:
  - name: metrics
    match: "metrics.*"
    windows: {sizes: [1s, 1m], lateness: 500ms}
  - name: orders
    match: orders
    routes: [{to: "orders.by_region.{region}"}]
"""

BAD = """
pipelines:
  - name: metrics
    match: "metrics.*"
    windows: {sizes: [10s, 15s]}
"""


def realtime(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_check_prints_the_parsed_pipelines(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(GOOD)
    result = realtime("pipelines", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert f"2 pipeline(s) from {path}:" in result.stdout
    assert "windows: 1s, 1m of data.value, lateness 500ms" in result.stdout
    assert "route -> orders.by_region.{region}" in result.stdout


def test_check_without_a_file_shows_the_built_in_default() -> None:
    result = realtime("pipelines", "check", env={"REALTIME_PIPELINES": ""})
    assert result.returncode == 0, result.stderr
    assert "1 pipeline(s) from built-in default" in result.stdout
    assert "windows: 1s, 10s, 1m of data.value" in result.stdout


def test_check_rejects_an_invalid_file_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(BAD)
    result = realtime("pipelines", "check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        "pipelines[0] (metrics).windows.sizes: every size must be a multiple of the smallest (10s)"
        in result.stderr
    )


def test_worker_refuses_to_start_with_an_invalid_file(tmp_path: Path) -> None:
    """Start-up validation: nothing is consumed (no Redis is even contacted)."""
    path = tmp_path / "pipelines.yaml"
    path.write_text(BAD)
    result = realtime(
        "process", env={"REALTIME_PIPELINES": str(path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert result.returncode == 2
    assert "realtime process: pipelines file" in result.stderr
    assert "windows.sizes: every size must be a multiple" in result.stderr
