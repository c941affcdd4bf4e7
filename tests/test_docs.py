"""The docs against the code: the generated references are fresh (`python -m docs.gen`
writes them; `make docs` and `make test` build the site strictly), every setting, metric
and error code has a meaning, and the README stays a front door that points into the docs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from docs import gen
from realtime.core import errors
from realtime.core.settings import environment_variables
from realtime.core.settings_docs import ENVIRONMENT_DOCS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def test_generated_references_are_fresh() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in gen.generate().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run `make docs` (python -m docs.gen) and commit: {stale}"


def test_every_environment_variable_has_a_meaning() -> None:
    assert set(ENVIRONMENT_DOCS) == environment_variables()
    assert all(text.strip() for text in ENVIRONMENT_DOCS.values())
    names = {f"`{name}`" for name in environment_variables()}
    reference = (DOCS / "reference" / "environment.md").read_text()
    assert {n for n in names if f"| {n} |" in reference} == names


def test_every_error_code_has_a_meaning() -> None:
    codes = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)}
    assert codes == set(errors.MEANINGS)


def operations_metrics() -> dict[str, str]:
    """Metric name -> process, from the Metrics table of docs/operations.md."""
    text = (DOCS / "operations.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(realtime_[a-z_]+)` +\| (\w+) +\| (web|worker) ", section, re.M)
    return {name: process for name, _, process in rows}


def test_the_operations_metrics_table_lists_exactly_the_registered_metrics() -> None:
    registered = {name: process for name, _, process, _, _ in gen.metric_table()}
    documented = operations_metrics()
    assert set(documented) == set(registered)
    for name, process in documented.items():
        assert process in registered[name], (name, process, registered[name])


def nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def test_every_docs_page_is_in_the_nav_and_the_nav_has_the_pages_of_issue_17() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True
    nav = nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    for page in (
        "getting-started.md", "concepts.md", "architecture.md", "protocol.md",
        "clients/js.md", "clients/python.md", "clients/mobile.md", "pipelines.md",
        "security.md", "configuration.md", "deployment.md", "operations.md", "scaling.md",
        "benchmarks.md", "troubleshooting.md", "development.md",
        "reference/environment.md", "reference/metrics.md", "reference/cli.md",
        "reference/errors.md",
    ):  # fmt: skip
        assert page in nav, page


def test_readme_is_a_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    # The quick start is exactly the two commands.
    quick = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick, re.S)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make run", "make test"]
    # Every link into docs/ names a page that exists (the site checks its own links).
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        assert (ROOT / link).exists(), link
    assert "docs/img/dashboard.png" in text
    assert (DOCS / "img" / "dashboard.png").stat().st_size < 300_000
