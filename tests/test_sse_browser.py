"""A real browser `EventSource` in Chromium reading `GET /api/v1/stream`: its web process
is killed mid-stream while events keep coming on both topics; the browser reconnects by
itself with `Last-Event-ID` and ends up with every event of every topic exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from realtime.dev.embedded import RedisServer
from tests.helpers.browser import dashboard_page, require_browser
from tests.helpers.clients import post_events
from tests.helpers.processes import ProcessGroup
from tests.helpers.stack import fresh_settings

pytestmark = pytest.mark.system

TOPICS = ("sse.a", "sse.b")

OPEN_SOURCE = """() => {
    window.seen = [];
    window.opens = 0;
    const source = new EventSource("/api/v1/stream?topic=sse.a&topic=sse.b");
    source.onopen = () => { window.opens += 1; };
    source.addEventListener("update", (e) => window.seen.push(JSON.parse(e.data)));
    window.source = source;
}"""


async def seen(page: Any, count: int) -> list[list[str]]:
    """Once the page has `count` events: each as [topic, id], in arrival order."""
    await page.wait_for_function("(n) => window.seen.length >= n", arg=count, timeout=30_000)
    return list(await page.evaluate("() => window.seen.map((e) => [e.topic, e.id])"))


async def test_an_event_source_killed_mid_stream_resumes_and_misses_nothing(
    redis_server: RedisServer, processes: ProcessGroup
) -> None:
    require_browser(dashboard=False)
    settings = fresh_settings(redis_server)
    web = processes.web(settings)
    other = processes.web(settings)  # producers keep posting through this one
    processes.worker(settings)
    posted: list[str] = []

    async def post(rounds: int) -> None:
        events = [{"topic": t, "data": {"n": n}} for n in range(rounds) for t in TOPICS]
        posted.extend(await post_events(other.url, events))

    async with dashboard_page(f"{web.url}/healthz") as (page, problems):
        await page.evaluate(OPEN_SOURCE)
        await page.wait_for_function("() => window.opens === 1")
        await post(10)
        await seen(page, len(posted))
        web.kill()  # mid-stream: the browser sees the connection drop
        await post(10)  # while it is away
        web.start().wait_ready()
        await page.wait_for_function("() => window.opens === 2", timeout=30_000)
        await post(10)
        got = await seen(page, len(posted))
        assert await page.evaluate("() => window.source.readyState") == 1  # OPEN
    for k, topic in enumerate(TOPICS):
        assert [i for t, i in got if t == topic] == posted[k :: len(TOPICS)], topic
    assert len(got) == len(posted)  # nothing twice
    # Chromium logs the refused reconnects of the stream (and the page, /healthz, has no
    # favicon); anything else is a problem.
    expected = ("/api/v1/stream", "/favicon.ico")
    assert [e for e in problems.errors if not any(x in e for x in expected)] == []
