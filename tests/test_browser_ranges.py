"""The dashboard's time-range control in a real browser against real web and worker
processes: each range backfills its chart from the tier the server picks
(`subscribe {from, resolution: "auto"}`), a hole in history is drawn as a break, the
chart keeps moving live, and switching range never reconnects. A screenshot goes to
artifacts/dashboard-range.png (copied to docs/img/ for docs/dashboard.md)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime.core import jsoncodec
from realtime.core.keys import HISTORY_DATA_FIELD, HISTORY_TS_FIELD, Keys
from realtime.core.settings import Settings
from realtime.dev.embedded import RedisServer
from tests.helpers.browser import ARTIFACTS, dashboard_page, require_browser
from tests.helpers.clients import post_events
from tests.helpers.processes import ProcessGroup, RealtimeProcess
from tests.helpers.stack import fresh_settings

pytestmark = pytest.mark.system

TOPIC = "metrics.range"
CHART = f'.chart[data-topic="{TOPIC}"]'
SCREENSHOT = ARTIFACTS / "dashboard-range.png"
MINUTE = 60_000
HOLE = (2 * 24 * 60, 2 * 24 * 60 + 360)  # minutes ago: six hours the 1m tier does not hold


@pytest.fixture(autouse=True)
def _browser_available() -> None:
    require_browser()


@pytest.fixture
def stack(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[RealtimeProcess, Settings]]:
    settings = fresh_settings(redis_server)
    group = ProcessGroup(tmp_path / "logs")
    try:
        web = group.web(settings)
        group.worker(settings)
        yield web, settings
    finally:
        group.stop_all()


def window(start: int, size: int, n: int) -> dict[str, Any]:
    value = round(50 + 12 * math.sin(start / 43_200_000) + 3 * math.sin(n * 0.7), 2)
    return {"window_start": start, "window_end": start + size, "count": 10, "avg": value}


async def write_tier(
    redis: Redis, settings: Settings, label: str, size: int, points: int, end: int
) -> int:
    """`points` windows of `size` ms ending at `end`, as the worker writes them (id: the
    window end, ts: its start), minus the 1m tier's HOLE; returns how many were written."""
    key = Keys(settings.prefix).topic(f"{TOPIC}:{label}")
    written = 0
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(points, 0, -1):
            start = end - n * size
            if label == "1m" and HOLE[0] <= n < HOLE[1]:
                continue
            fields = {
                HISTORY_TS_FIELD: str(start),
                HISTORY_DATA_FIELD: jsoncodec.dumps(window(start, size, n)),
            }
            pipe.xadd(key, fields, id=f"{start + size}-0")  # type: ignore[arg-type]
            written += 1
        await pipe.execute()
    return written


async def served(page: Any, resolution: str) -> None:
    await page.wait_for_function(
        "([topic, tier]) => window.__realtime.store.getState().served[topic]?.served === tier",
        arg=[TOPIC, f"{TOPIC}:{resolution}"],
        timeout=20_000,
    )


async def points(page: Any) -> int:
    return int(await page.locator(CHART).get_attribute("data-points") or 0)


async def at_least(page: Any, count: int) -> None:
    await page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel)?.dataset.points) >= n",
        arg=[CHART, count],
        timeout=30_000,
    )


async def test_each_range_backfills_its_tier_and_keeps_moving_live(
    stack: tuple[RealtimeProcess, Settings],
) -> None:
    web, settings = stack
    redis = Redis.from_url(settings.redis_url)
    end = (int(time.time() * 1000) - 5000) // 1000 * 1000  # whole seconds, a little ago
    week = await write_tier(redis, settings, "1m", MINUTE, 7 * 24 * 60, end)
    await write_tier(redis, settings, "10s", 10_000, 360, end)
    await write_tier(redis, settings, "1s", 1000, 300, end)
    await redis.aclose()

    async with dashboard_page(f"{web.url}/?topics={TOPIC}") as (page, problems):
        await page.wait_for_selector('[data-testid=connection][data-status="connected"]')
        socket_id = await page.evaluate("window.__realtime.socket.id")
        chart = CHART

        # 5 min: the 1 s windows, then live ones as events arrive.
        await page.click("[data-testid=range-5m]")
        await served(page, "1s")
        await at_least(page, 280)  # from 5 min before the click: the 1 s windows since
        backfilled = await points(page)
        assert backfilled <= 300
        for n in range(8):
            await post_events(web.url, [{"topic": TOPIC, "data": {"value": 50 + n}}])
            await page.wait_for_timeout(400)  # spread over seconds: windows close as time passes
        await at_least(page, backfilled + 1)
        newest = await page.evaluate(f"window.__realtime.series.get('{TOPIC}').xs.at(-1)")
        assert newest * 1000 > end  # a window closed after the backfill: live

        # 1 h: the 10 s windows, on the same connection.
        await page.click("[data-testid=range-1h]")
        await served(page, "10s")
        await at_least(page, 340)
        assert await points(page) <= 362  # from an hour ago only (plus what went live)

        # 7 d: the 1 m windows, the six missing hours drawn as a break.
        await page.click("[data-testid=range-7d]")
        await served(page, "1m")
        await at_least(page, week - 30)  # a week before the click, less the hole
        assert await points(page) <= week + 2
        assert int(await page.locator(chart).get_attribute("data-breaks") or 0) >= 1
        assert "1m windows" in await page.locator("[data-testid=range-served]").inner_text()

        state = await page.evaluate(
            "[window.__realtime.socket.id, window.__realtime.store.getState().connection.connects]"
        )
        assert state == [socket_id, 1]  # switching range never reconnected
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT))
        assert problems.errors == []
