"""Prometheus metrics: what a web or worker process counts, in a registry of its own.

Each process builds one `CollectorRegistry` and one `WebMetrics` or `WorkerMetrics` on
it at start-up and passes that object down to the code that observes; nothing here is
global, so two apps in one test process never share a counter. The docs list every
metric (docs/operations.md, and docs/reference/metrics.md generated from these
registries); `tests/test_metrics.py` and `tests/test_docs.py` hold the code to them.

Hot paths observe through `WeightedHistogram`: one call records an observation for
many clients at once (a fan-out batch sent to a thousand connections is one call per
event, not a thousand).
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a millisecond on loopback to the better part of a minute.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds, finer at the low end: one stage of an event's path (`StageHistogram`).
STAGE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
WEB_STAGES = ("queue", "recovery_log", "handout")
WORKER_STAGES = ("read", "process", "commit")
# Bytes waiting to be written to one connection (the default bound is 1 MiB).
BACKLOG_BUCKETS = (0, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


def _cumulative(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    running = 0
    out = []
    for bound, count in zip([*map(floatToGoString, bounds), "+Inf"], counts, strict=True):
        running += count
        out.append((bound, float(running)))
    return out


class Series:
    """Bucket counts and a sum, whose `observe` can count one value several times in
    O(log buckets). Not thread-safe: observed and collected on the process's one event
    loop."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.sum += value * count

    def cumulative(self) -> list[tuple[str, float]]:
        return _cumulative(self.bounds, self.counts)


class WeightedHistogram(Series, Collector):
    """A histogram metric of one `Series` (a fan-out batch sent to a thousand connections
    is one `observe`, not a thousand)."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        super().__init__(buckets)
        self.name = name
        self.documentation = documentation
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=self.cumulative(), sum_value=self.sum
        )


class StageHistogram(Collector):
    """`realtime_stage_seconds{stage}`: the time live events spend in each stage of the
    data path (see `WebMetrics` and `WorkerMetrics` for the stages each process
    observes), so that an operator (and `python -m bench.latency`) can see where the
    milliseconds of the end-to-end latency go. Weighted like `WeightedHistogram`."""

    NAME = "realtime_stage_seconds"
    DOC = (
        "Live events, per stage of their path. The worker's, one observation per batch: "
        "read (from ingest accepting the batch's oldest entry, its id's time, to the "
        "worker holding it), process (from the read to the commit being sent), commit "
        "(the commit's round trip: history, fan-out publish, ack). The web's, one per "
        "event and client: queue (from receiving the fan-out message to the start of its "
        "hand-out: the batching tick, hand-outs before it), recovery_log (the hand-out "
        "waiting for its recovery-log entry to be sent), handout (from the start of "
        "the hand-out to the event being handed to the client's connection, the "
        "recovery-log wait included)."
    )
    _labelnames = ("stage",)  # for docs/gen.py

    def __init__(self, stages: Sequence[str], registry: CollectorRegistry) -> None:
        self.stages = {stage: Series(STAGE_BUCKETS) for stage in stages}
        registry.register(self)

    def __getitem__(self, stage: str) -> Series:
        return self.stages[stage]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.NAME, self.DOC, labels=["stage"])
        for stage, series in self.stages.items():
            family.add_metric([stage], series.cumulative(), sum_value=series.sum)
        yield family


class SnapshotHistogram(Collector):
    """A histogram of values read at scrape time (e.g. every connection's backlog now)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        values: Callable[[], Iterable[float]],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(buckets)
        self.values = values
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        counts = [0] * (len(self.bounds) + 1)
        total = 0.0
        for value in self.values():
            counts[bisect.bisect_left(self.bounds, value)] += 1
            total += value
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=_cumulative(self.bounds, counts),
            sum_value=total,
        )


class ProcessMetrics:
    """What web and worker processes both count: Redis trouble."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.redis_errors = Counter(
            "realtime_redis_errors",
            "Redis commands that failed (connection lost, timeout, refused), by component.",
            ["component"],
            registry=self.registry,
        )
        self.redis_reconnects = Counter(
            "realtime_redis_reconnects",
            "Times a component got Redis back after failures, by component.",
            ["component"],
            registry=self.registry,
        )
        # What holds the event loop (`realtime.core.loopwatch`): a stall of tens of ms
        # every few seconds is the p99 of every event's latency.
        self.loop_lag = WeightedHistogram(
            "realtime_event_loop_lag_seconds",
            "How late a timer the event loop is asked to run every 100 ms runs: the "
            "loop was busy (or the process off its CPU) that long.",
            STAGE_BUCKETS,
            self.registry,
        )
        self.gc_pause = Histogram(
            "realtime_gc_pause_seconds",
            "Cyclic garbage collections and how long each held the process, by generation.",
            ["generation"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        for generation in ("0", "1", "2"):
            self.gc_pause.labels(generation)
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def redis_error(self, component: str) -> None:
        self.redis_errors.labels(component).inc()

    def redis_reconnect(self, component: str) -> None:
        self.redis_reconnects.labels(component).inc()

    def on_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run `refresh` before each exposition (values that cost a Redis call)."""
        self._refreshers.append(refresh)

    async def exposition(self) -> bytes:
        for refresh in self._refreshers:
            await refresh()
        return generate_latest(self.registry)


class WebMetrics(ProcessMetrics):
    """A web process: connections, delivery, fan-out, ingest."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.connected_clients = Gauge(
            "realtime_connected_clients",
            "Socket.IO connections to namespace / on this instance.",
            registry=r,
        )
        self.subscriptions = Gauge(
            "realtime_subscriptions", "Topic subscriptions on this instance.", registry=r
        )
        self.sse_readers = Gauge(
            "realtime_sse_readers",
            "Server-Sent Events streams (GET /api/v1/stream) open on this instance.",
            registry=r,
        )
        self.events_received = Counter(
            "realtime_events_received",
            "Topic events this instance received from the fan-out (once per event).",
            registry=r,
        )
        self.events_delivered = Counter(
            "realtime_events_delivered",
            "Topic events handed to client connections (once per event and client).",
            ["path"],
            registry=r,
        )
        # looked up once (a bound method: not a metric of its own for docs/gen.py)
        self._count_live = self.events_delivered.labels("live").inc
        self.events_dropped = Counter(
            "realtime_events_dropped",
            "Topic events not handed to a subscribed client, by reason.",
            ["reason"],
            registry=r,
        )
        self.delivery_latency = WeightedHistogram(
            "realtime_delivery_latency_seconds",
            "Live events: from the event id's time (ingest accepted it) to the moment this "
            "instance handed it to a client's connection; one observation per client.",
            LATENCY_BUCKETS,
            r,
        )
        # One observation per fan-out message: a `Series`, not prometheus_client's
        # Histogram (a lock and a value object per bucket), whose `observe` was about a
        # tenth of a message's decode at 1,000 topics x 1 (bench small-topics).
        self.fanout_latency = WeightedHistogram(
            "realtime_fanout_latency_seconds",
            "From the worker publishing a fan-out message to this instance emitting it.",
            LATENCY_BUCKETS,
            r,
        )
        self.stage = StageHistogram(WEB_STAGES, r)
        self.ingest_requests = Counter(
            "realtime_ingest_requests",
            "POST /api/v1/events requests, by response status.",
            ["status"],
            registry=r,
        )
        self.draining = Gauge(
            "realtime_draining", "1 while this instance drains its clients (SIGTERM).", registry=r
        )
        self.auth_throttled = Counter(
            "realtime_auth_throttled",
            "Requests refused unchecked because their client address or credential is "
            "locked out after failed credentials, by kind: admin (the Admin UI and "
            "/metrics), ingest (publish keys).",
            ["kind"],
            registry=r,
        )
        self.disconnects = Counter(
            "realtime_disconnects",
            "Connections this instance closed, by reason: slow_client, gap, drain.",
            ["reason"],
            registry=r,
        )
        self.recoveries = Counter(
            "realtime_session_recoveries",
            "Connects that asked to recover a session (socket.io-client's pid and offset, "
            "or a resume token), by outcome: recovered, or fresh (a new session instead).",
            ["outcome"],
            registry=r,
        )
        self.presence_viewers = Gauge(
            "realtime_presence_viewers",
            "Viewers on this instance, as presence counts them: topic subscriptions and "
            "SSE readers' topics.",
            registry=r,
        )
        self.presence_updates = Counter(
            "realtime_presence_updates_published",
            "Changes of this instance's viewer count of a topic written to Redis and noted "
            "to the other instances (at most one per topic per flush interval).",
            registry=r,
        )

    def watch_backlogs(self, backlogs: Callable[[], Iterable[float]]) -> None:
        """`backlogs()` gives every connection's outgoing backlog (bytes) at scrape time."""
        SnapshotHistogram(
            "realtime_client_backlog_bytes",
            "Bytes waiting to be written, per websocket connection, at scrape time.",
            BACKLOG_BUCKETS,
            backlogs,
            self.registry,
        )

    def delivered_live(self, ids_ms: Sequence[int], clients: int, now_ms: float) -> None:
        """Live events (their ids' milliseconds) handed to `clients` connections at
        `now_ms`: taken once per batch, since handing a frame over never suspends."""
        if clients <= 0 or not ids_ms:
            return
        self._count_live(len(ids_ms) * clients)
        for ms in ids_ms:
            self.delivery_latency.observe(max(now_ms - ms, 0.0) / 1000, clients)


class WorkerMetrics(ProcessMetrics):
    """A worker process: partitions, batches, leases."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.entries = Counter(
            "realtime_worker_entries",
            "Ingest entries committed (their events written, or dead-lettered).",
            registry=r,
        )
        self.events = Counter(
            "realtime_worker_events",
            "Topic events written to history and published.",
            registry=r,
        )
        self.dead_letters = Counter(
            "realtime_dead_letters", "Entries moved to the dead-letter stream.", registry=r
        )
        self.late_events = Counter(
            "realtime_late_events",
            "Events that arrived for an already closed window, by pipeline (counted, not merged).",
            ["pipeline"],
            registry=r,
        )
        self.skipped_events = Counter(
            "realtime_pipeline_skipped_events",
            "Events a pipeline did not take, by pipeline and reason.",
            ["pipeline", "reason"],
            registry=r,
        )
        self.stage = StageHistogram(WORKER_STAGES, r)
        self.batch_duration = Histogram(
            "realtime_worker_batch_duration_seconds",
            "Processing one batch read from a partition, through its commit.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.lease_changes = Counter(
            "realtime_lease_changes",
            "Partition leases acquired, released or lost by this worker.",
            ["change"],
            registry=r,
        )
        self.partitions_owned = Gauge(
            "realtime_partitions_owned", "Partitions this worker owns now.", registry=r
        )
        self.stream_lag = Gauge(
            "realtime_stream_lag",
            "Entries of an owned partition not yet read by the group (Redis 7+).",
            ["partition"],
            registry=r,
        )
        self.stream_pending = Gauge(
            "realtime_stream_pending",
            "Entries of an owned partition read but not yet acknowledged.",
            ["partition"],
            registry=r,
        )
