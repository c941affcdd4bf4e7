"""The Heroku path, checked without Heroku: `app.json` (the Heroku Button manifest) is
valid and agrees with the Procfile, the settings the code reads, and the build: the Node
buildpack builds the dashboard into the package before the Python buildpack installs it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from realtime.core.settings import environment_variables
from tests.test_procfile import procfile

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def app() -> dict[str, Any]:
    data = json.loads((ROOT / "app.json").read_text())
    assert isinstance(data, dict)
    return data


def test_app_json_is_valid_and_describes_the_app() -> None:
    data = app()
    assert data["name"] == "realtime"
    assert data["description"]
    # Only keys the app.json schema knows (a typo would be ignored by Heroku, silently).
    known = {
        "name", "description", "keywords", "website", "repository", "logo", "success_url",
        "scripts", "env", "formation", "image", "addons", "buildpacks", "environments", "stack",
    }  # fmt: skip
    assert set(data) <= known


def test_formation_is_the_procfile_process_types() -> None:
    formation = app()["formation"]
    assert set(formation) == set(procfile()) == {"web", "worker"}
    for process in formation.values():
        assert process["quantity"] >= 1


def test_buildpacks_build_the_dashboard_before_python_installs_the_package() -> None:
    assert [b["url"] for b in app()["buildpacks"]] == ["heroku/nodejs", "heroku/python"]
    package = json.loads((ROOT / "package.json").read_text())
    # heroku/nodejs runs `heroku-postbuild` if present, else `build`, after `npm ci`.
    script = package["scripts"].get("heroku-postbuild") or package["scripts"]["build"]
    assert "vite build" in script
    config = (ROOT / "dashboard" / "vite.config.js").read_text()
    assert re.search(r"outDir: .*\"\.\./realtime/static/dashboard\"", config)
    assert "node" in package["engines"]
    # heroku/python: the production lock, the Python version, then the package (with the
    # dashboard as package data) by bin/post_compile.
    assert (ROOT / "requirements.txt").is_file()
    assert (ROOT / ".python-version").read_text().strip() == "3.11"
    post_compile = ROOT / "bin" / "post_compile"
    assert os.access(post_compile, os.X_OK)
    assert "pip install" in post_compile.read_text()
    setup = (ROOT / "setup.cfg").read_text()
    assert re.search(r"^realtime\.static = \*, \*\*/\*$", setup, re.M)


def test_redis_comes_from_the_heroku_redis_add_on() -> None:
    addons = app()["addons"]
    plans = [a["plan"] if isinstance(a, dict) else a for a in addons]
    assert any(p.split(":")[0] == "heroku-redis" for p in plans)
    # Attached as REDIS (the default), so it sets REDIS_URL, which Settings reads.
    for addon in addons:
        if isinstance(addon, dict) and addon.get("as"):
            assert addon["as"] == "REDIS"
    assert "REDIS_URL" in environment_variables()


def test_config_vars_are_settings_and_the_server_can_start_secure() -> None:
    env = app()["env"]
    assert set(env) <= environment_variables(), set(env) - environment_variables()
    # realtime serve refuses to start without client and ingest auth: both generated.
    for name in ("REALTIME_JWT_SECRET", "REALTIME_INGEST_KEYS"):
        assert env[name]["generator"] == "secret", name
    assert "REALTIME_INSECURE" not in env
    for name, var in env.items():
        assert var.get("description"), name
        assert ("value" in var) != ("generator" in var), name
