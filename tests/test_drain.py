"""Graceful drain on SIGTERM, with real processes: 1,000 connected clients are dropped
in batches spread over the drain window, `/readyz` and new connections get 503 at once,
the process exits before the deadline, and resuming SDK clients lose nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field

import aiohttp
import pytest

from realtime.core.settings import Settings
from realtime.delivery.drain import schedule, windows
from tests.helpers.clients import Watcher
from tests.helpers.feed import Feed
from tests.helpers.processes import ProcessGroup

CLIENTS = 1000
DRAIN_S = 6.0
TOPICS = ["drain.a", "drain.b", "drain.c"]


@dataclass
class RawClients:
    """Lean Socket.IO clients: raw websockets (aiohttp) that connect to namespace `/`,
    answer pings, and note when the server ends their connection."""

    url: str
    session: aiohttp.ClientSession
    closed_at: list[float] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def connect(self, count: int, parallel: int = 50) -> None:
        ready: asyncio.Queue[None] = asyncio.Queue()
        limit = asyncio.Semaphore(parallel)
        for _ in range(count):
            self.tasks.append(asyncio.create_task(self._client(limit, ready)))
        for _ in range(count):
            await asyncio.wait_for(ready.get(), 60)

    async def _client(self, limit: asyncio.Semaphore, ready: asyncio.Queue[None]) -> None:
        ws_url = self.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        async with limit:
            ws = await self.session.ws_connect(ws_url, autoping=True)
            opened = await ws.receive_str(timeout=30)
            assert opened.startswith("0{"), opened
            await ws.send_str("40")
            connected = await ws.receive_str(timeout=30)
            assert connected.startswith("40{"), connected
        ready.put_nowait(None)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT and message.data == "2":
                await ws.send_str("3")
        self.closed_at.append(time.monotonic())
        await ws.close()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def status_of(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as response:
        return response.status


async def until_status(http: aiohttp.ClientSession, url: str, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (got := await status_of(http, url)) != status:
        assert time.monotonic() < deadline, f"{url} still answers {got}"
        await asyncio.sleep(0.01)


@pytest.mark.system
async def test_sigterm_drains_a_thousand_clients_spread_out_and_resuming_ones_lose_nothing(
    settings: Settings, processes: ProcessGroup
) -> None:
    settings = settings.with_overrides(lease_ms=1000)
    doomed = processes.web(settings, REALTIME_DRAIN_S=str(DRAIN_S))
    spare = processes.web(settings)
    processes.worker(settings)
    watchers = [
        await Watcher(
            [doomed.url, spare.url], f"sdk-{transport}-{n}", transports=[transport]
        ).start(*TOPICS)
        for n, transport in enumerate(["websocket", "websocket", "polling"])
    ]
    feed = Feed(spare.url, TOPICS, batch=5)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        raw = RawClients(doomed.url, http)
        await raw.connect(CLIENTS)
        posting = asyncio.create_task(feed.run(600, pace_s=0.02))
        await feed.wait_until(lambda: feed.accepted >= 50, "events before the drain")

        assert doomed.process is not None
        sigterm_at = time.monotonic()
        doomed.signal(signal.SIGTERM)
        # At once (as soon as the signal is handled): not ready, and a new connection is
        # refused (it goes elsewhere).
        await until_status(http, doomed.url + "/readyz", 503, timeout=2.0)
        handshake = doomed.url + "/socket.io/?EIO=4&transport=polling"
        assert await status_of(http, handshake) == 503
        assert await status_of(http, doomed.url + "/healthz") == 200

        exit_code = await asyncio.to_thread(doomed.process.wait, 30)
        exited_after = time.monotonic() - sigterm_at
        await posting
        await raw.close()

    assert exit_code == 0
    assert exited_after < DRAIN_S, f"exited {exited_after:.1f}s after SIGTERM"
    assert len(raw.closed_at) == CLIENTS  # every one was disconnected, within the window
    offsets = sorted(t - sigterm_at for t in raw.closed_at)
    window = windows(DRAIN_S)[0]
    print(
        f"\ndrain of {CLIENTS} clients: first {offsets[0]:.2f}s, median "
        f"{offsets[CLIENTS // 2]:.2f}s, last {offsets[-1]:.2f}s; exit at {exited_after:.2f}s"
    )
    # Spread over the window, not all at once: each quarter of it saw a share of them.
    assert offsets[-1] < DRAIN_S
    quarters = [
        sum(1 for o in offsets if q * window / 4 <= o < (q + 1) * window / 4) for q in range(4)
    ]
    assert all(n >= CLIENTS // 10 for n in quarters), quarters
    assert max(quarters) <= CLIENTS // 2, quarters

    for watcher in watchers:
        await watcher.wait_for_ids(feed.last_ids(), timeout=60)
        for topic, ids in feed.acknowledged.items():
            assert watcher.topic_ids(topic) == ids, f"{watcher.name} {topic}"
        assert watcher.gaps == []
        assert watcher.client.url == spare.url
        await watcher.close()


@pytest.mark.unit
def test_the_drain_leaves_time_to_close() -> None:
    assert windows(20) == (15, 5)
    assert windows(6) == (4, 2)
    assert windows(2) == (1, 1)
    assert windows(0) == (0, 0)


@pytest.mark.unit
@pytest.mark.parametrize(("count", "window"), [(0, 5.0), (1, 5.0), (7, 0.0), (1000, 4.5)])
def test_schedule_takes_everyone_once_in_even_batches_within_the_window(
    count: int, window: float
) -> None:
    steps = schedule(count, window)
    taken = [i for _, first, end in steps for i in range(first, end)]
    assert taken == list(range(count))
    assert all(0 <= offset <= window for offset, _, _ in steps)
    assert [o for o, _, _ in steps] == sorted(o for o, _, _ in steps)
    sizes = [end - first for _, first, end in steps]
    if sizes:
        assert max(sizes) - min(sizes) <= 1
