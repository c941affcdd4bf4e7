"""The load generator: many lean Socket.IO clients in this process's one event loop
(realtime.loadtest.wsclient), counting deliveries of the current step and their latency."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from realtime.loadtest import wsclient
from realtime.loadtest.stats import Histogram, percentile


@dataclass
class Tally:
    """Deliveries of the current step (events whose data.s is `step`) and of older ones.

    Latency from the publisher's timestamp (data.t) to: `latency`, the moment this
    process handled the packet (all clients but the stamped ones); `arrival`, the
    moment the packet reached a stamped client's socket (the kernel's timestamp: not
    counting the time the packet waited for this process, which handles one client
    after another, while a real client has a CPU of its own).

    The hot path only appends each latency to an array (this process is the load
    generator: its CPU per delivery bounds what it can measure); the histograms are
    built when asked for."""

    step: int = -1
    delivered: int = 0
    packets: int = 0  # `update` packets (WebSocket frames) that carried them
    stale: int = 0
    latency_ms: array[float] = field(default_factory=lambda: array("d"))
    arrival_ms: array[float] = field(default_factory=lambda: array("d"))
    # Stamped clients, split where ingest accepted the event (its id's time, Redis's
    # clock: the same machine's): publisher -> accepted, accepted -> arrival.
    to_ingest: Histogram = field(default_factory=Histogram)
    from_ingest: Histogram = field(default_factory=Histogram)
    _built: dict[tuple[int, int], Histogram] = field(default_factory=dict, repr=False)

    def reset(self, step: int) -> None:
        self.step = step
        self.delivered = 0
        self.packets = 0
        self.stale = 0
        self.latency_ms = array("d")
        self.arrival_ms = array("d")
        self.to_ingest = Histogram()
        self.from_ingest = Histogram()
        self._built = {}

    @property
    def latency(self) -> Histogram:
        return self._histogram(self.latency_ms)

    @property
    def arrival(self) -> Histogram:
        return self._histogram(self.arrival_ms)

    def _histogram(self, latencies: array[float]) -> Histogram:
        """The latencies as a histogram, built once per step and count."""
        key = (id(latencies), len(latencies))
        cached = self._built.get(key)
        if cached is None:
            cached = Histogram()
            for value in latencies:
                cached.record(value)
            self._built = {**self._built, key: cached}
        return cached

    def on_update(self, client: wsclient.SioWebSocket, events: list[Any], at_ms: float) -> None:
        self._record(events, at_ms, self.latency_ms)

    def on_stamped_update(
        self, client: wsclient.SioWebSocket, events: list[Any], at_ms: float
    ) -> None:
        self._record(events, at_ms, self.arrival_ms)
        step = self.step
        for event in events:  # the split at ingest: the event id's time is when it was accepted
            data = event["data"]
            if data["s"] == step:
                accepted = int(event["id"].partition("-")[0])
                self.to_ingest.record(accepted - data["t"])
                self.from_ingest.record(at_ms - accepted)

    def _record(self, events: list[Any], at_ms: float, latencies: array[float]) -> None:
        # Called once per delivered message (a hot loop).
        step = self.step
        append = latencies.append
        n = 0
        for event in events:
            data = event["data"]
            if data["s"] == step:
                append(at_ms - data["t"])
                n += 1
        self.stale += len(events) - n
        self.delivered += n
        if n:
            self.packets += 1

    @property
    def seen(self) -> int:
        return self.delivered + self.stale


@dataclass
class Clients:
    clients: list[wsclient.SioWebSocket]
    connect_ms: list[float]  # sorted
    elapsed_s: float
    failures: int

    @property
    def rate(self) -> float:
        return len(self.clients) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def connect_p(self, q: float) -> float:
        return percentile(self.connect_ms, q)

    def close(self) -> None:
        for client in self.clients:
            client.abort()


async def open_clients(
    urls: Sequence[str],
    count: int,
    topic_of: Callable[[int], str | None],
    tally: Tally,
    *,
    concurrency: int = 200,
    deflate: bool = True,
    timeout_s: float = 30.0,
    stamp_every: int = 0,
    sources: Sequence[str] = (),
) -> Clients:
    """Connect `count` clients round-robin over `urls`, client i subscribed to topic_of(i).

    `stamp_every` n: every n-th client reads with kernel receive timestamps
    (`Tally.arrival`); 0: none. `sources`: local addresses to connect from, round-robin
    (more connections than one address has ephemeral ports)."""
    gate = asyncio.Semaphore(concurrency)
    clients: list[wsclient.SioWebSocket] = []
    times: list[float] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with gate:
            started = time.perf_counter()
            try:
                stamped = stamp_every > 0 and i % stamp_every == 0
                client = await wsclient.connect(
                    urls[i % len(urls)],
                    deflate=deflate,
                    on_update=tally.on_stamped_update if stamped else tally.on_update,
                    timeout=timeout_s,
                    stamped=stamped,
                    local_host=sources[i % len(sources)] if sources else None,
                )
            except (OSError, TimeoutError, ValueError):
                failures += 1
                return
            times.append((time.perf_counter() - started) * 1000)
            topic = topic_of(i)
            if topic is not None:
                ack = await client.call("subscribe", {"topic": topic}, timeout=timeout_s)
                if not (isinstance(ack, dict) and ack.get("ok")):
                    raise RuntimeError(f"subscribe {topic} refused: {ack}")
            client.tag = topic
            clients.append(client)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    times.sort()
    return Clients(clients, times, elapsed, failures)
