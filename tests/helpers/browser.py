"""Headless Debian chromium driven by Playwright for Python (no browser download).

The page's console errors and uncaught exceptions are collected, so a test can assert the
dashboard ran cleanly.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from realtime.web.dashboard import BUILT_DIR

CHROMIUM = Path(os.environ.get("REALTIME_TEST_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
# As root in a container, on a machine with no network but loopback: no sandbox, no GPU,
# and none of chromium's own background traffic. Playwright adds --headless and a fresh
# temporary --user-data-dir per launch.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser(*, dashboard: bool = True) -> None:
    """Skip (fail on CI) unless chromium, Playwright and (if `dashboard`) a built
    dashboard are all here."""
    missing = None
    if not CHROMIUM.is_file():
        missing = f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)"
    elif dashboard and not (Path(str(BUILT_DIR)) / "index.html").is_file():
        missing = "the dashboard is not built: run `make dashboard` (make test does)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run on CI: {missing}")
    pytest.skip(missing)


@dataclass
class PageProblems:
    errors: list[str] = field(default_factory=list)

    def on_console(self, message: Any) -> None:
        if message.type == "error":
            # The location names the resource for network errors ("Failed to load resource").
            self.errors.append(f"console: {message.text} at {message.location.get('url', '?')}")

    def on_pageerror(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")


@asynccontextmanager
async def dashboard_page(
    url: str, width: int = 1400, height: int = 900
) -> AsyncIterator[tuple[Any, PageProblems]]:
    """A fresh browser on `url`; yields (page, problems)."""
    from playwright.async_api import async_playwright

    problems = PageProblems()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            page.on("console", problems.on_console)
            page.on("pageerror", problems.on_pageerror)
            await page.goto(url)
            yield page, problems
        finally:
            await browser.close()
