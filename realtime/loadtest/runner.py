"""`realtime loadtest`: drive a deployment end to end and measure what its users see.

Ramp N simulated clients (bounded concurrency), each subscribed to one of T topics; publish
events at a rate through the ingest API (the producer's side of the data path); count
every delivery against what was accepted, with its latency from the timestamp the
publisher put in the event's data. Optionally restart a target instance mid-run and
measure how long clients took to come back and what they missed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from realtime.core import jsoncodec
from realtime.core.backoff import Backoff
from realtime.loadtest import polling, stamped, wsclient
from realtime.loadtest.frames import ProtocolError
from realtime.loadtest.stats import Histogram

PUBLISH_TICK_S = 0.01
PUBLISH_GRACE_S = 5.0  # retrying refused batches after the end of --duration
PUBLISH_TIMEOUT_S = 10.0  # one POST


class LoadTestError(RuntimeError):
    """The load test could not run (e.g. the target is unreachable); the message says why."""


@dataclass(frozen=True)
class LoadTestConfig:
    url: str
    clients: int = 100
    topics: int = 10
    rate: float = 10.0  # events/s over all topics
    duration_s: float = 30.0
    ramp_concurrency: int = 100
    polling_share: float = 0.0
    payload_bytes: int = 0
    deflate: bool = True
    stamped: bool = False  # websocket clients read with kernel receive timestamps
    resume: bool = True
    drain_s: float = 5.0
    connect_timeout_s: float = 10.0
    topic_prefix: str = ""
    restart_cmd: str | None = None
    kill_pid: int | None = None
    kill_signal: int = signal.SIGTERM
    restart_at_s: float | None = None
    max_loss: float = 0.0
    max_p99_ms: float | None = None
    token: str = field(default="", repr=False)  # the JWT each client connects with
    key: str = field(default="", repr=False)  # the publish key the producer sends

    def validate(self) -> None:
        """Raise ValueError naming the option whose value cannot work."""
        checks = [
            (self.clients >= 1, "--clients must be >= 1"),
            (self.topics >= 1, "--topics must be >= 1"),
            (self.topics <= self.clients, "--topics must not exceed --clients"),
            (self.rate > 0, "--rate must be > 0"),
            (self.duration_s > 0, "--duration must be > 0"),
            (self.ramp_concurrency >= 1, "--ramp-concurrency must be >= 1"),
            (0.0 <= self.polling_share <= 1.0, "--polling-share must be within 0..1"),
            (self.payload_bytes >= 0, "--payload-bytes must be >= 0"),
            (self.drain_s >= 0, "--drain must be >= 0"),
            (0.0 <= self.max_loss <= 1.0, "--max-loss must be within 0..1"),
            (
                not (self.restart_cmd and self.kill_pid),
                "--restart-cmd and --kill-pid are exclusive",
            ),
            (
                self.restart_at_s is None or 0 <= self.restart_at_s < self.duration_s,
                "--restart-at must be within the publishing --duration",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"--url must be an http:// or https:// URL, got {self.url!r}")
        if self.url.startswith("https://") and self.polling_share < 1.0:
            raise ValueError("https:// targets are supported with --polling-share 1 only (for now)")
        if self.stamped and not stamped.supported():
            raise ValueError("--stamped needs kernel receive timestamps (SO_TIMESTAMPNS: Linux)")

    @property
    def restarts(self) -> bool:
        return bool(self.restart_cmd or self.kill_pid)

    @property
    def polling_clients(self) -> int:
        return round(self.clients * self.polling_share)


@dataclass
class Counters:
    """Everything measured, updated from the clients' callbacks."""

    connect: Histogram = field(default_factory=Histogram)
    latency: Histogram = field(default_factory=Histogram)
    reconnect: Histogram = field(default_factory=Histogram)
    delivered: int = 0
    duplicates: int = 0
    gaps: int = 0
    missed_in_gaps: int = 0
    reconnects: int = 0
    disconnects: int = 0
    published: int = 0
    publish_requests: int = 0
    publish_retries: int = 0
    not_accepted: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    per_topic_published: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str, exc: BaseException | str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if self.first_error is None:
            self.first_error = f"{kind}: {exc}"


@dataclass
class Sim:
    """One simulated user: its topic, what it has seen, its current connection."""

    index: int
    topic: str
    polling: bool
    last_seq: int = -1
    # The id of the last event seen (or where the first subscribe said to resume from):
    # sent as `since` when subscribing again, so a reconnect misses nothing.
    position: str | None = None
    client: Any = None
    down_since: float | None = None
    subscribed: bool = False  # at least once: it is owed every event from then on


class LoadTest:
    def __init__(
        self, config: LoadTestConfig, progress: Callable[[LoadTest, str], None] | None = None
    ) -> None:
        config.validate()
        self.config = config
        self.progress = progress or (lambda test, phase: None)
        self._run_id = secrets.token_hex(4)
        prefix = config.topic_prefix or f"loadtest.{self._run_id}"
        self.topics = [f"{prefix}.{i}" for i in range(config.topics)]
        n_polling = config.polling_clients
        stride = config.clients / n_polling if n_polling else 0
        polling_indexes = {int(i * stride) for i in range(n_polling)}
        self.sims = [
            Sim(i, self.topics[i % config.topics], i in polling_indexes)
            for i in range(config.clients)
        ]
        self.counters = Counters()
        self.phase = "ramp"
        self.started = time.monotonic()
        self.publish_elapsed_s = 0.0
        self.ramp_elapsed_s = 0.0
        self.restart: dict[str, Any] | None = None
        self._stopping = False
        self._connector: aiohttp.TCPConnector | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._auth = {"token": config.token} if config.token else None
        self._post_headers = {"Content-Type": "application/json"}
        if config.key:
            self._post_headers["Authorization"] = f"Bearer {config.key}"

    # -- clients --------------------------------------------------------------------------

    def _on_update(self, client: Any, events: list[Any], at_ms: float) -> None:
        sim: Sim = client.tag
        counters = self.counters
        record = counters.latency.record
        for event in events:
            data = event.get("data") if isinstance(event, dict) else None
            if not isinstance(data, dict) or "lt" not in data:
                continue  # not ours: someone else publishes to this topic
            seq = data.get("seq", -1)
            if seq <= sim.last_seq:
                counters.duplicates += 1
                continue
            if seq > sim.last_seq + 1:
                counters.gaps += 1
                counters.missed_in_gaps += seq - sim.last_seq - 1
            sim.last_seq = seq
            sim.position = event.get("id", sim.position)
            counters.delivered += 1
            record(at_ms - data["lt"])

    def _on_close(self, client: Any, reason: BaseException | None) -> None:
        sim: Sim = client.tag
        if self._stopping or sim.client is not client:
            return
        self.counters.disconnects += 1
        sim.down_since = time.monotonic()
        sim.client = None
        self._spawn(self._reconnect(sim))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, sim: Sim) -> Any:
        config = self.config
        if sim.polling:
            assert self._connector is not None
            client: Any = await polling.connect(
                config.url,
                self._connector,
                on_update=self._on_update,
                on_close=self._on_close,
                timeout=config.connect_timeout_s,
                auth=self._auth,
            )
        else:
            client = await wsclient.connect(
                config.url,
                deflate=config.deflate,
                on_update=self._on_update,
                on_close=self._on_close,
                timeout=config.connect_timeout_s,
                auth=self._auth,
                stamped=config.stamped,
            )
        client.tag = sim
        request: dict[str, Any] = {"topic": sim.topic}
        if config.resume and sim.position is not None:
            request["since"] = sim.position
        try:
            ack = await client.call("subscribe", request, timeout=config.connect_timeout_s)
        except BaseException:
            client.abort()
            raise
        if not (isinstance(ack, dict) and ack.get("ok")):
            client.abort()
            raise ConnectionRefusedError(f"subscribe {sim.topic} refused: {ack}")
        if sim.position is None and isinstance(ack.get("since"), str):
            sim.position = ack["since"]
        sim.client = client
        sim.subscribed = True
        if client.closed.done():  # closed while subscribing: let the owner retry
            sim.client = None
            raise ConnectionError("connection closed right after subscribing")
        return client

    async def _connect_one(self, sim: Sim, gate: asyncio.Semaphore) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                await self._open(sim)
            except (OSError, TimeoutError, ValueError, ProtocolError) as exc:
                self.counters.error("connect", _describe(exc))
                return
            self.counters.connect.record((time.perf_counter() - started) * 1000)

    async def _reconnect(self, sim: Sim) -> None:
        backoff = Backoff(base_s=0.1, cap_s=2.0)
        while not self._stopping:
            await asyncio.sleep(backoff.next_delay())
            try:
                await self._open(sim)
            except (OSError, TimeoutError, ValueError, ProtocolError):
                continue  # the instance is still down: keep trying, as real clients do
            self.counters.reconnects += 1
            if sim.down_since is not None:
                self.counters.reconnect.record((time.monotonic() - sim.down_since) * 1000)
                sim.down_since = None
            return

    @property
    def connected(self) -> int:
        return sum(1 for s in self.sims if s.client is not None and s.client.is_open)

    # -- publishing -----------------------------------------------------------------------

    async def _publish(self, session: aiohttp.ClientSession) -> None:
        """Publish `rate` events/s for `duration_s`, in batches of the events due. A batch
        the deployment refuses is retried until PUBLISH_GRACE_S after the end; what was
        never accepted by then is counted, not expected of the clients."""
        config = self.config
        url = config.url.rstrip("/") + "/api/v1/events"
        pad = "x" * config.payload_bytes
        seqs: dict[str, int] = dict.fromkeys(self.topics, 0)
        count = max(1, round(config.rate * config.duration_s))
        start = time.monotonic()
        give_up = start + config.duration_s + PUBLISH_GRACE_S
        sent = 0
        while sent < count and not self._stopping:
            if time.monotonic() > give_up:
                self.counters.not_accepted += count - sent
                self.counters.error("publish", f"{count - sent} events not accepted in time")
                break
            due = min(count, int((time.monotonic() - start) * config.rate) + 1, sent + 1000)
            if due <= sent:
                await asyncio.sleep(PUBLISH_TICK_S)
                continue
            batch: list[dict[str, Any]] = []
            for n in range(sent, due):
                topic = self.topics[n % len(self.topics)]
                data: dict[str, Any] = {"lt": wsclient.now_ms(), "seq": seqs[topic]}
                if pad:
                    data["pad"] = pad
                # An idempotency key: a retry of a request whose answer was lost (an
                # instance killed mid-request) stores nothing twice.
                key = f"{self._run_id}.{seqs[topic]}"  # unique to this run
                batch.append({"topic": topic, "data": data, "key": key})
                seqs[topic] += 1
            if await self._post(session, url, batch, give_up):
                published = self.counters.per_topic_published
                for event in batch:
                    published[event["topic"]] = published.get(event["topic"], 0) + 1
                self.counters.published += len(batch)
            else:  # never accepted (the latest batch): its numbers are free again
                self.counters.not_accepted += len(batch)
                for event in batch:
                    seqs[event["topic"]] -= 1
            sent = due
        self.publish_elapsed_s = time.monotonic() - start

    async def _post(
        self, session: aiohttp.ClientSession, url: str, batch: list[Any], give_up: float
    ) -> bool:
        """POST one batch, retrying while the deployment is unavailable (as a producer
        would); True once it was accepted."""
        backoff = Backoff(base_s=0.05, cap_s=1.0)
        body = jsoncodec.dumpb(batch)
        while True:
            self.counters.publish_requests += 1
            try:
                async with session.post(url, data=body, headers=self._post_headers) as response:
                    text = await response.text()
                    if response.status == 202:
                        return True
                    problem = f"HTTP {response.status}: {text[:200]}"
                    retry = response.status in (502, 503, 504)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                problem, retry = _describe(exc), True
            if not retry or time.monotonic() > give_up:
                self.counters.error("publish", problem)
                return False
            self.counters.publish_retries += 1
            await asyncio.sleep(backoff.next_delay())

    # -- restart --------------------------------------------------------------------------

    async def _restart_later(self) -> None:
        config = self.config
        at = config.restart_at_s if config.restart_at_s is not None else config.duration_s / 2
        await asyncio.sleep(at)
        info: dict[str, Any] = {"at_s": round(at, 3)}
        if config.restart_cmd:
            info["command"] = config.restart_cmd
            # Its output goes to our stderr (stdout may be carrying --json); no pipes, so a
            # server it starts in the background cannot keep us waiting for an EOF.
            proc = await asyncio.create_subprocess_shell(
                config.restart_cmd, stdin=asyncio.subprocess.DEVNULL, stdout=sys.stderr.fileno()
            )
            info["exit_code"] = await proc.wait()
            if proc.returncode:
                self.counters.error("restart", f"--restart-cmd exited with {proc.returncode}")
        elif config.kill_pid:
            info["pid"] = config.kill_pid
            info["signal"] = signal.Signals(config.kill_signal).name
            try:
                os.kill(config.kill_pid, config.kill_signal)
            except OSError as exc:
                self.counters.error("restart", _describe(exc))
        self.restart = info

    # -- the run --------------------------------------------------------------------------

    async def _preflight(self) -> None:
        """One client first, so an unreachable or wrong target fails fast and clearly."""
        sim = Sim(-1, self.topics[0], self.config.polling_share >= 1.0)
        try:
            client = await self._open(sim)
        except (OSError, TimeoutError, ValueError, ProtocolError) as exc:
            raise LoadTestError(f"cannot connect to {self.config.url}: {_describe(exc)}") from None
        sim.client = None  # so its close is not taken for a disconnect
        client.close()

    async def run(self) -> dict[str, Any]:
        config = self.config
        self._connector = aiohttp.TCPConnector(limit=0, force_close=False)
        try:
            await self._preflight()
            self.phase = "ramp"
            gate = asyncio.Semaphore(config.ramp_concurrency)
            ramp_started = time.monotonic()
            self._spawn(self._tick())
            await asyncio.gather(*(self._connect_one(s, gate) for s in self.sims))
            self.ramp_elapsed_s = time.monotonic() - ramp_started
            if self.connected == 0:
                raise LoadTestError(
                    f"no client could connect to {config.url}: {self.counters.first_error}"
                )
            self.phase = "publish"
            async with aiohttp.ClientSession(
                connector=self._connector,
                connector_owner=False,
                timeout=aiohttp.ClientTimeout(total=PUBLISH_TIMEOUT_S),
            ) as http:
                restart = asyncio.create_task(self._restart_later()) if config.restarts else None
                if restart is not None:
                    self._tasks.add(restart)  # cancelled with the rest if publishing fails
                await self._publish(http)
                if restart is not None:
                    await restart
            self.phase = "drain"
            await self._drain()
            self.phase = "done"
            self.progress(self, "done")
            return self.result()
        finally:
            self._stopping = True
            for task in list(self._tasks):
                task.cancel()
            for sim in self.sims:
                if sim.client is not None:
                    sim.client.abort()
            await asyncio.sleep(0)
            await self._connector.close()

    async def _tick(self) -> None:
        while True:
            self.progress(self, self.phase)
            await asyncio.sleep(0.25)

    def expected(self) -> int:
        """Deliveries owed: each accepted event times the clients of its topic that had
        subscribed by the end of the ramp (publishing starts after it)."""
        subscribers: dict[str, int] = {}
        for sim in self.sims:
            if sim.subscribed:
                subscribers[sim.topic] = subscribers.get(sim.topic, 0) + 1
        return sum(
            n * subscribers.get(topic, 0) for topic, n in self.counters.per_topic_published.items()
        )

    async def _drain(self) -> None:
        """Wait, at most --drain seconds, until every client is connected and has its
        topic's last event; what it skipped on the way (while away) stays missed."""
        deadline = time.monotonic() + self.config.drain_s
        while time.monotonic() < deadline:
            if not self._reconnecting() and self._tails_complete():
                return
            await asyncio.sleep(0.05)

    def _tails_complete(self) -> bool:
        published = self.counters.per_topic_published
        return all(
            sim.last_seq >= published.get(sim.topic, 0) - 1 for sim in self.sims if sim.subscribed
        )

    def _reconnecting(self) -> int:
        return sum(1 for s in self.sims if s.down_since is not None)

    def result(self) -> dict[str, Any]:
        from realtime.loadtest.report import build_result

        return build_result(self)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text
