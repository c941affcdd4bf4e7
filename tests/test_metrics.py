"""Prometheus metrics: every metric docs/operations.md lists is exposed by the process it
names, and the counters move when events flow (real web and worker processes); the
public `/metrics` is guarded; the histogram helpers count right."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.metrics import SnapshotHistogram, StageHistogram, WeightedHistogram
from realtime.core.settings import Settings
from realtime.dev.embedded import free_port
from tests.helpers.clients import Collector, post_events
from tests.helpers.inprocess import running_app
from tests.helpers.processes import ProcessGroup

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def documented() -> dict[str, str]:
    """Metric name -> process (`web` or `worker`), from the "Metrics" table of the
    Operations page (tests/test_docs.py holds it to the registries)."""
    text = OPERATIONS.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(realtime_[a-z_]+)` +\| (\w+) +\| (web|worker) ", section, re.M)
    assert len(rows) >= 20, "the metrics table of docs/operations.md did not parse"
    return {name: process for name, _, process in rows}


def parse(text: str) -> tuple[set[str], Samples]:
    """The metric names (counters with `_total`) and every sample's value."""
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return names, samples


async def scrape(url: str, http: aiohttp.ClientSession) -> tuple[set[str], Samples]:
    async with http.get(url + "/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await response.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.system
async def test_each_documented_metric_is_exposed_and_counters_move_with_events(
    settings: Settings, processes: ProcessGroup, redis: Redis
) -> None:
    web_metrics, worker_metrics = free_port(), free_port()
    web = processes.web(settings, REALTIME_METRICS_PORT=str(web_metrics))
    processes.worker(settings, REALTIME_METRICS_PORT=str(worker_metrics))
    client = await Collector("watcher").connect(web.url)
    await client.subscribe("metrics.flow")
    # Something for the dead-letter counter: an ingest entry that can never be processed.
    await redis.xadd(Keys.of(settings).ingest(0), {"garbage": "1"})

    events = [{"topic": "metrics.flow", "data": {"n": n}} for n in range(20)]
    async with aiohttp.ClientSession() as http:
        ids = await post_events(web.url, events, http)
        async with http.post(web.url + "/api/v1/events", data=b"not json") as response:
            assert response.status == 400
        await client.wait_for_id(ids[-1])

        web_names, web_samples = await scrape(web.url, http)
        private_names, _ = await scrape(f"http://127.0.0.1:{web_metrics}", http)
        worker_names, worker_samples = await scrape(f"http://127.0.0.1:{worker_metrics}", http)
    await client.close()

    for name, process in documented().items():
        assert name in (web_names if process == "web" else worker_names), f"{process}: {name}"
    assert private_names == web_names

    assert value(web_samples, "realtime_connected_clients") == 1
    assert value(web_samples, "realtime_subscriptions") == 1
    assert value(web_samples, "realtime_events_received_total") >= 20
    assert value(web_samples, "realtime_events_delivered_total", path="live") >= 20
    assert value(web_samples, "realtime_delivery_latency_seconds_count") >= 20
    assert value(web_samples, "realtime_delivery_latency_seconds_bucket", le="+Inf") >= 20
    assert value(web_samples, "realtime_fanout_latency_seconds_count") >= 1
    for stage in ("queue", "handout", "recovery_log"):
        assert value(web_samples, "realtime_stage_seconds_count", stage=stage) >= 20, stage
    assert value(web_samples, "realtime_client_backlog_bytes_count") == 1
    assert value(web_samples, "realtime_ingest_requests_total", status="202") == 1
    assert value(web_samples, "realtime_ingest_requests_total", status="400") == 1
    assert value(web_samples, "realtime_draining") == 0

    assert value(worker_samples, "realtime_worker_entries_total") >= 21
    assert value(worker_samples, "realtime_worker_events_total") >= 20
    assert value(worker_samples, "realtime_dead_letters_total") == 1
    assert value(worker_samples, "realtime_worker_batch_duration_seconds_count") >= 1
    for stage in ("read", "process", "commit"):
        assert value(worker_samples, "realtime_stage_seconds_count", stage=stage) >= 1, stage
    assert value(worker_samples, "realtime_lease_changes_total", change="acquired") == 4
    assert value(worker_samples, "realtime_partitions_owned") == 4
    # (Lag may be absent: Redis cannot tell it once entries were deleted from a stream.)
    for partition in "0123":
        assert value(worker_samples, "realtime_stream_pending", partition=partition) == 0


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.integration
async def test_public_metrics_are_off_without_admin_credentials(settings: Settings) -> None:
    async with (
        running_app(settings.with_overrides(insecure=False)) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/metrics") as response,
    ):
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


@pytest.mark.system
async def test_public_metrics_need_the_admin_credentials(
    settings: Settings, processes: ProcessGroup
) -> None:
    # A real `realtime serve` process, configured as an operator would.
    web = processes.web(
        settings.with_overrides(insecure=False),
        REALTIME_ADMIN_USER="ops",
        REALTIME_ADMIN_PASSWORD="s3cret",
        # Not insecure: it will not start without authentication configured.
        REALTIME_JWT_SECRET="metrics-test-secret-of-at-least-32-chars",
        REALTIME_INGEST_KEYS="metrics-test-publish-key",
    )
    async with aiohttp.ClientSession() as http:
        for headers in ({}, basic("ops", "wrong"), basic("ops", "")):
            async with http.get(web.url + "/metrics", headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Basic")
        async with http.get(web.url + "/metrics", headers=basic("ops", "s3cret")) as response:
            assert response.status == 200
            assert "realtime_connected_clients" in await response.text()


@pytest.mark.unit
def test_weighted_histogram_counts_one_value_for_many_clients() -> None:
    registry = CollectorRegistry()
    histogram = WeightedHistogram("h_seconds", "test", [0.1, 1.0], registry)
    histogram.observe(0.1, 3)  # on a bound: counts in that bucket (le is inclusive)
    histogram.observe(0.5)
    histogram.observe(5.0, 2)
    _, samples = parse(_exposition(registry))
    assert [value(samples, "h_seconds_bucket", le=le) for le in ("0.1", "1.0", "+Inf")] == [
        3,
        4,
        6,
    ]
    assert value(samples, "h_seconds_count") == 6
    assert value(samples, "h_seconds_sum") == pytest.approx(0.3 + 0.5 + 10.0)


@pytest.mark.unit
def test_stage_histogram_has_one_labelled_series_per_stage() -> None:
    registry = CollectorRegistry()
    stages = StageHistogram(("read", "commit"), registry)
    stages["read"].observe(0.003, 2)
    stages["commit"].observe(0.0004)
    _, samples = parse(_exposition(registry))
    assert value(samples, "realtime_stage_seconds_count", stage="read") == 2
    assert value(samples, "realtime_stage_seconds_sum", stage="read") == pytest.approx(0.006)
    assert value(samples, "realtime_stage_seconds_bucket", stage="read", le="0.002") == 0
    assert value(samples, "realtime_stage_seconds_bucket", stage="read", le="0.005") == 2
    assert value(samples, "realtime_stage_seconds_bucket", stage="commit", le="0.0005") == 1


@pytest.mark.unit
def test_snapshot_histogram_reads_its_values_at_each_scrape() -> None:
    registry = CollectorRegistry()
    values = [0, 3, 3, 700]
    SnapshotHistogram("b", "test", [0, 5], lambda: values, registry)
    _, samples = parse(_exposition(registry))
    assert [value(samples, "b_bucket", le=le) for le in ("0.0", "5.0", "+Inf")] == [1, 3, 4]
    values.clear()
    _, samples = parse(_exposition(registry))
    assert value(samples, "b_count") == 0


def _exposition(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()
