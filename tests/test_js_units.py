"""The JS unit tests (`tests/js/*.test.mjs`, node's own runner): the resume helper's logic
against a scripted socket, and the dashboard's buffers."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.jsclient import ROOT, require_node

pytestmark = pytest.mark.system


def test_js_units_pass() -> None:
    node = require_node()
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "js").glob("*.test.mjs"))
    assert files, "no JS unit tests found"
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout or "fail 0" in result.stdout, result.stdout
