"""The dashboard as a user sees it, in a real browser against real processes: the demo's
topics at 390 px (a phone) and at desktop width, with screenshots of both in artifacts/
(dashboard-mobile.png, dashboard-desktop.png); charts that leave out id-like fields, break
at gaps, size their axes to their labels, use a 24-hour clock, and show each topic's rate
and latency; a dismissable, self-expiring gap notice; the topic browser; the keyboard."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from realtime.dev.demo import DemoFeed
from realtime.dev.embedded import RedisServer
from tests.helpers.browser import ARTIFACTS, dashboard_page, require_browser
from tests.helpers.clients import post_events
from tests.helpers.processes import ProcessGroup, RealtimeProcess
from tests.helpers.stack import fresh_settings, running_stack

pytestmark = pytest.mark.system

DEMO = ("metrics.cpu", "metrics.memory", "metrics.requests", "events.orders")
feed = DemoFeed(seed=21)


@pytest.fixture(autouse=True)
def _browser_available() -> None:
    require_browser()


def demo_history(ticks: int = 150, interval_ms: int = 500) -> list[dict[str, Any]]:
    """The demo feed's events (`realtime dev`), stamped over the last `ticks` intervals."""
    now = int(time.time() * 1000)
    return [
        {**event, "ts": now - (ticks - n) * interval_ms}
        for n in range(ticks)
        for event in feed.next_batch()
    ]


@pytest.fixture(scope="module")
def web(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealtimeProcess]:
    with running_stack(fresh_settings(redis_server), tmp_path_factory.mktemp("ui-layout")) as web:
        # The demo's recent history, which a page gets in its subscribe's snapshot.
        asyncio.run(post_events(web.url, demo_history()))
        yield web


async def post_live(web: RealtimeProcess, ticks: int = 6) -> None:
    """A few of the demo's ticks, stamped now, as `realtime dev` posts them."""
    for _ in range(ticks):
        await post_events(web.url, feed.next_batch())
        await asyncio.sleep(0.2)


async def wait_connected(page: Any) -> None:
    await page.wait_for_selector(
        '[data-testid=connection][data-status="connected"]', timeout=20_000
    )


async def horizontal_overflow(page: Any) -> int:
    """How many CSS pixels the page is wider than its viewport (0: no sideways scroll)."""
    return int(
        await page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
    )


# For each chart: its axes' labels, and how much room the widest y label has to spare.
AXES = """() => [...window.__realtime.plots].map(([topic, plot]) => {
    const [x, y] = plot.axes;
    plot.ctx.font = y.font[0];
    const widest = Math.max(...y._values.map((v) => plot.ctx.measureText(v).width)) / uPlotRatio();
    return {topic, x: x._values, y: y._values, spare: y._size - y.ticks.size - y.gap - widest};
})"""


async def axes(page: Any) -> list[dict[str, Any]]:
    await page.evaluate("() => { window.uPlotRatio = () => window.devicePixelRatio || 1; }")
    return list(await page.evaluate(AXES))


async def one_break(
    page: Any, topic: str, last_before: int, first_after: int
) -> tuple[list[Any], int]:
    """The chart's values ('null' at a break) and the index of its one break, which must
    lie between the last point before the outage and the first after it (epoch ms)."""
    xs, values = await page.evaluate(
        f"() => {{ const d = window.__realtime.plots.get('{topic}').data;"
        " return [d[0], d[1].map((v) => v === null ? 'null' : v)]; }"
    )
    gaps = [i for i, v in enumerate(values) if v == "null"]
    assert len(gaps) == 1, values
    assert last_before / 1000 < xs[gaps[0]] < first_after / 1000
    return values, gaps[0]


@pytest.mark.parametrize(
    ("name", "width", "height"),
    [
        ("dashboard-mobile", 390, 844),
        ("dashboard-360", 360, 740),
        ("dashboard-desktop", 1440, 900),
        ("dashboard-4k", 3840, 2160),
    ],
)
async def test_demo_topics_fit_the_viewport(
    web: RealtimeProcess, name: str, width: int, height: int
) -> None:
    """The demo's four topics: no sideways scrolling, every card's close button on screen, axes that
    fit their labels, a 24-hour clock, each topic's rate and latency; a screenshot."""
    async with dashboard_page(
        f"{web.url}/?topics={','.join(DEMO)}", width=width, height=height
    ) as (page, problems):
        await wait_connected(page)
        for topic in DEMO:
            await page.wait_for_selector(f'.chart[data-topic="{topic}"]:not([data-points="0"])')
        await post_live(web)
        await page.wait_for_function(
            "() => document.querySelector('.chart[data-topic=\"metrics.cpu\"]').dataset.rate > 0"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        await page.screenshot(path=str(ARTIFACTS / f"{name}-full.png"), full_page=True)

        assert await horizontal_overflow(page) <= 0
        for topic in DEMO:
            close = page.get_by_role("button", name=f"Stop following {topic}", exact=True)
            box = await close.last.bounding_box()  # the card's (the chip's comes first)
            assert box is not None
            assert box["x"] >= 0, (topic, box)
            assert box["x"] + box["width"] <= width, (topic, box)

        charts = await axes(page)
        assert {c["topic"] for c in charts} == set(DEMO)
        for chart in charts:
            assert chart["spare"] >= 0, chart  # no y label clipped
            assert chart["x"], chart
            for label in chart["x"]:
                assert not any(c.isalpha() for c in label), chart  # no "pm"
                assert label[:2].isdigit(), chart  # 18:55, 18:55:03, 12-05
                assert label[2] in ":-", chart

        cpu = page.locator('.chart[data-topic="metrics.cpu"]')
        assert (await cpu.get_by_test_id("rate").inner_text()).endswith("/s")
        latency = await cpu.get_attribute("data-latency")
        assert latency, "no latency measured"
        assert -5_000 < float(latency) < 10_000, latency
        assert (await cpu.get_by_test_id("latency").inner_text()).endswith(("ms", " s"))
        assert problems.errors == []


async def test_an_id_like_field_is_left_out_and_the_legend_shows_it(
    web: RealtimeProcess,
) -> None:
    """The demo's order number (10,000-99,999) is not drawn over the order's value; the
    legend shows it on request, from the keyboard too."""
    topic = "ui.orders.ids"
    async with dashboard_page(f"{web.url}/?topics={topic}") as (page, problems):
        await wait_connected(page)
        now = int(time.time() * 1000)
        await post_events(
            web.url,
            [
                {"topic": topic, "ts": now - (40 - n) * 700,
                 "data": {"order": 10_000 + (n * 7919) % 89_999, "region": "eu",
                          "value": round(5 + (n * 37) % 495 + 0.5, 2)}}
                for n in range(40)
            ],
        )  # fmt: skip
        chart = page.locator(f'.chart[data-topic="{topic}"]')
        await page.wait_for_selector(f'.chart[data-topic="{topic}"][data-points="40"]')
        assert await chart.get_attribute("data-shown") == "value"
        assert await chart.get_attribute("data-hidden") == "order"
        y_max = f"() => window.__realtime.plots.get('{topic}').scales.y.max"
        assert await page.evaluate(y_max) < 1000
        assert float(await chart.get_attribute("data-last") or "nan") == 5 + (39 * 37) % 495 + 0.5

        order = chart.locator("button[data-field=order]")
        assert " ".join((await order.inner_text()).split()) == "order (id)"
        assert await order.get_attribute("aria-pressed") == "false"
        await order.focus()
        await page.keyboard.press("Enter")
        await page.wait_for_function(f"{y_max} > 10000")
        assert await order.get_attribute("aria-pressed") == "true"
        assert await chart.get_attribute("data-hidden") == ""
        await page.keyboard.press("Space")
        await page.wait_for_function(f"{y_max} < 1000")
        assert await order.get_attribute("aria-pressed") == "false"
        assert problems.errors == []


async def test_a_chart_breaks_where_nothing_arrived(web: RealtimeProcess) -> None:
    """Half a second apart, then nothing for a minute (a web restart, a producer down),
    then half a second apart again: uPlot gets a null inside the outage and no other."""
    topic = "ui.outage"
    async with dashboard_page(f"{web.url}/?topics={topic}") as (page, problems):
        await wait_connected(page)
        now = int(time.time() * 1000)
        before = [now - 90_000 + 500 * n for n in range(20)]  # up to now - 80.5 s
        after = [now - 20_000 + 500 * n for n in range(20)]
        await post_events(
            web.url,
            [{"topic": topic, "ts": ts, "data": {"value": n % 5}}
             for n, ts in enumerate(before + after)],
        )  # fmt: skip
        await page.wait_for_selector(f'.chart[data-topic="{topic}"][data-points="40"]')
        chart = page.locator(f'.chart[data-topic="{topic}"]')
        assert await chart.get_attribute("data-breaks") == "1"
        values, gap = await one_break(page, topic, before[-1], after[0])
        assert values[gap - 1] != "null"
        assert values[gap + 1] != "null"
        assert problems.errors == []


async def test_the_gap_notice_can_be_dismissed_and_expires(web: RealtimeProcess) -> None:
    """The "Gap at ..." notice has a dismiss button (keyboard too) and goes by itself after
    30 s; the connection keeps saying what the last resume found (data-resume)."""
    async with dashboard_page(f"{web.url}/?topics=ui.notice") as (page, problems):
        await wait_connected(page)
        status = page.get_by_test_id("connection")
        notice = page.get_by_test_id("resume-notice")

        async def gap(seconds_ago: float) -> None:
            await page.evaluate(
                """(ago) => window.__realtime.store.setState({resume: {state: "gap",
                    at: Date.now() - ago * 1000, dismissed: false,
                    gaps: [{topic: "ui.notice", at: Date.now() - ago * 1000}]}})""",
                seconds_ago,
            )

        await gap(0)
        await notice.wait_for()
        text = await notice.inner_text()
        assert "Gap at" in text
        assert "ui.notice" in text
        dismiss = notice.get_by_role("button", name="Dismiss this notice")
        await dismiss.focus()
        await page.keyboard.press("Enter")
        await notice.wait_for(state="detached")
        assert await status.get_attribute("data-resume") == "gap"

        await gap(28)  # two seconds left
        await notice.wait_for()
        await notice.wait_for(state="detached", timeout=6_000)
        await gap(31)  # already expired
        assert await notice.count() == 0
        assert problems.errors == []


async def test_topic_browser_searches_by_prefix_and_follows_from_the_keyboard(
    web: RealtimeProcess,
) -> None:
    """On a phone: the browser lists the server's topic directory (with each topic's rate)
    and what the page knows, narrowed by a prefix; Space on a checkbox follows a topic; a
    topic followed by name joins the list (and is remembered)."""
    async with dashboard_page(f"{web.url}/?topics=", width=390, height=844) as (page, problems):
        await wait_connected(page)
        browse = page.get_by_role("button", name="Browse topics")
        assert await browse.get_attribute("aria-expanded") == "false"
        await browse.focus()
        await page.keyboard.press("Enter")
        browser = page.get_by_test_id("topic-browser")
        await browser.wait_for()
        await page.get_by_label("Search topics by prefix").fill("metrics.")
        # From the directory (this fresh page has seen no topic): the demo's metrics and
        # their window aggregates, nothing else, each with its recent rate.
        await page.wait_for_selector(
            '[data-testid=topic-browser] li[data-topic="metrics.requests"][data-listed=true]'
        )
        names = await browser.locator("label").all_inner_texts()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{web.url}/api/v1/topics", params={"prefix": "metrics."}) as r,
        ):
            directory = [t["topic"] for t in (await r.json())["topics"]]
        assert set(names) <= set(directory)  # (window outputs may have appeared since)
        assert names == sorted(names)
        assert {"metrics.cpu", "metrics.memory", "metrics.requests"} <= set(names)
        assert all(name.startswith("metrics.") for name in names)
        cpu = browser.locator('li[data-topic="metrics.cpu"]')
        assert await cpu.get_attribute("data-listed") == "true"
        # its rate and its viewers (presence): "0.5/s · 0 watching"
        assert re.fullmatch(
            r"[0-9.]+/s · [0-9]+ watching", await cpu.locator(".figures").inner_text()
        )
        await page.get_by_label("Search topics by prefix").fill("metrics.cpu")
        await page.wait_for_function(
            """() => {
                const labels = [...document.querySelectorAll('[data-testid=topic-browser] label')];
                return labels.length > 0 && labels.length < 10
                    && labels.every((l) => l.innerText.startsWith('metrics.cpu'));
            }"""
        )

        await page.get_by_label("Search topics by prefix").fill("events")
        box = browser.get_by_role("checkbox", name="events.orders")
        await box.focus()
        await page.keyboard.press("Space")
        await page.wait_for_selector('.chart[data-topic="events.orders"]:not([data-points="0"])')
        assert await box.is_checked()
        await page.get_by_label("Search topics by prefix").fill("")
        await page.wait_for_selector('[data-testid=directory-note]:has-text("with recent events")')
        await page.screenshot(path=str(ARTIFACTS / "dashboard-topics-mobile.png"))
        assert await horizontal_overflow(page) <= 0
        # A topic followed by name is listed from then on, and remembered.
        await page.get_by_label("Topic", exact=True).fill("picked.browsed")
        await page.get_by_role("button", name="Follow", exact=True).click()
        await page.get_by_label("Search topics by prefix").fill("picked.")
        assert await browser.locator("label").all_inner_texts() == ["picked.browsed"]
        # Once the directory answers: not listed there, so no recent event.
        await (
            browser.locator('li[data-topic="picked.browsed"][data-listed=false] .figures')
            .filter(has_text="no recent events")
            .wait_for()
        )
        known = await page.evaluate("() => localStorage.getItem('realtime.known')")
        assert "picked.browsed" in known
        await page.keyboard.press("Space")  # focus is on Follow: nothing to do with the list
        await browser.get_by_role("checkbox", name="picked.browsed").uncheck()
        await page.wait_for_selector('.chart[data-topic="picked.browsed"]', state="detached")
        await page.get_by_label("Search topics by prefix").fill("nothing.here")
        assert "No topic starts with" in await browser.inner_text()
        assert problems.errors == []


async def test_topic_browser_reads_further_directory_pages_on_demand(
    web: RealtimeProcess,
) -> None:
    """105 topics under one prefix: the first page lists 100, *More topics* the rest."""
    wanted = [f"many.t{n:03d}" for n in range(105)]
    await post_events(web.url, [{"topic": t, "data": {"value": 1}} for t in wanted])
    async with dashboard_page(f"{web.url}/?topics=") as (page, problems):
        await wait_connected(page)
        await page.get_by_role("button", name="Browse topics").click()
        browser = page.get_by_test_id("topic-browser")

        async def listed_names() -> list[str]:
            return await browser.locator('li[data-listed="true"] label').all_inner_texts()

        more = browser.get_by_role("button", name="More topics")
        async with asyncio.timeout(30):
            while True:  # until the worker has written all 105 (refreshed every 10 s)
                await page.get_by_label("Search topics by prefix").fill("")
                await page.get_by_label("Search topics by prefix").fill("many.")
                await more.wait_for()
                if await listed_names() == wanted[:100]:
                    break
        await more.click()
        await browser.locator('li[data-topic="many.t104"][data-listed="true"]').wait_for()
        assert await listed_names() == wanted
        assert await more.count() == 0  # the last page
        assert problems.errors == []


async def test_controls_show_where_the_keyboard_is(web: RealtimeProcess) -> None:
    """Tabbing reaches the controls in order, and each shows a visible focus ring."""
    async with dashboard_page(f"{web.url}/?topics=metrics.cpu") as (page, problems):
        await wait_connected(page)
        await page.wait_for_selector('.chart[data-topic="metrics.cpu"]:not([data-points="0"])')
        reached = []
        for _ in range(20):
            await page.keyboard.press("Tab")
            focused = await page.evaluate(
                """() => { const el = document.activeElement, s = getComputedStyle(el);
                    return {tag: el.tagName, outline: s.outlineStyle,
                            width: parseFloat(s.outlineWidth),
                            name: el.getAttribute('aria-label') || el.textContent.trim()}; }"""
            )
            if focused["tag"] == "BODY":
                break
            reached.append(focused)
        names = [r["name"] for r in reached]
        assert names == [
            "Topic", "Follow", "Browse topics", "Stop following metrics.cpu",
            "Now", "5 min", "1 h", "24 h", "7 d",
            "Stop following metrics.cpu", "value", "Event log, newest first",
        ]  # fmt: skip
        for r in reached:
            assert r["outline"] != "none", r
            assert r["width"] >= 2, r
        assert problems.errors == []


async def test_a_web_restart_breaks_the_line_across_the_outage(
    redis_server: RedisServer, processes: ProcessGroup
) -> None:
    """As under `realtime dev`: a producer posts every 200 ms to the page's own web
    process, which dies for a few seconds (the posts fail) and comes back. The chart
    breaks there instead of drawing a straight line across the outage."""
    settings = fresh_settings(redis_server)
    web = processes.web(settings)
    processes.worker(settings)
    topic = "ui.restarted"

    async def produce(ticks: int) -> list[int]:
        stamps = []
        for n in range(ticks):
            stamps.append(int(time.time() * 1000))
            await post_events(web.url, {"topic": topic, "ts": stamps[-1], "data": {"value": n}})
            await asyncio.sleep(0.2)
        return stamps

    async with dashboard_page(f"{web.url}/?topics={topic}") as (page, problems):
        await wait_connected(page)
        before = await produce(20)  # 16 spacings at least, before a gap is judged
        await page.wait_for_selector(f'.chart[data-topic="{topic}"][data-points="20"]')
        web.kill()
        await page.wait_for_selector('[data-testid=connection][data-status="reconnecting"]')
        await asyncio.sleep(3)
        web.start().wait_ready()
        await wait_connected(page)
        after = await produce(15)
        await page.wait_for_selector(f'.chart[data-topic="{topic}"][data-points="35"]')
        values, gap = await one_break(page, topic, before[-1], after[0])
        assert values[:gap] == list(range(20))
        assert values[gap + 1 :] == list(range(15))
        await page.screenshot(path=str(ARTIFACTS / "dashboard-restart-break.png"))
        # Chromium logs the refused reconnects; anything else is a problem.
        assert [e for e in problems.errors if "/socket.io/" not in e] == []
