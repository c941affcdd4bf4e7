"""Fixtures that start real services (Redis, web and worker processes) and always stop them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from redis.asyncio import Redis

from processors.worker.consumer import Consumer
from realtime.core.connections import connect
from realtime.core.settings import Settings
from realtime.core.wire import UpdateEncoder
from realtime.dev.embedded import RedisServer
from tests.helpers.clients import Collector
from tests.helpers.inprocess import running_app
from tests.helpers.processes import ProcessGroup

# Property tests: deterministic (same examples every run, no example database) and lean.
hypothesis_settings.register_profile(
    "realtime",
    max_examples=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.load_profile("realtime")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart through their own key prefix."""
    server = RedisServer(directory=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.cleanup()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop, kill and restart."""
    server = RedisServer(directory=tmp_path / "redis").start()
    yield server
    server.cleanup()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def settings(redis_server: RedisServer, prefix: str) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        prefix=prefix,
        insecure=True,
        partitions=4,
        block_ms=200,
        redis_timeout_s=2.0,
        consumer=f"test-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = connect(settings)
    yield client
    await client.aclose()


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    """A web app served in this test's event loop."""
    async with running_app(settings) as url:
        yield url


@pytest.fixture
async def worker(redis: Redis, settings: Settings) -> AsyncIterator[None]:
    """The worker's consumer loop running in this test's event loop."""
    stop = asyncio.Event()
    fanout = UpdateEncoder.of(settings)
    task = asyncio.create_task(Consumer(redis, fanout, settings).run(stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[Collector]:
    """A Socket.IO client of `base_url` that records what it receives."""
    collector = await Collector().connect(base_url)
    yield collector
    await collector.close()


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ProcessGroup]:
    """Start `realtime` processes; all are stopped at the end, their logs shown on failure."""
    group = ProcessGroup(tmp_path / "logs")
    yield group
    group.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(group.logs())


TIERS = ("unit", "integration", "system")
# Fixtures that start Redis or processes: a test that asks for one is not a unit test.
SERVICE_FIXTURES = frozenset({"redis_server", "own_redis", "processes"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test names exactly one tier, and a unit test starts no service, so
    `pytest -m unit` stays pure and fast."""
    wrong = []
    for item in items:
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        fixtures = set(getattr(item, "fixturenames", ())) & SERVICE_FIXTURES
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: marked {sorted(tiers) or 'with no tier'}")
        elif "unit" in tiers and fixtures:
            wrong.append(f"{item.nodeid}: marked unit but uses {sorted(fixtures)}")
    if wrong:
        raise pytest.UsageError(
            "every test needs exactly one of @pytest.mark.unit / integration / system:\n  "
            + "\n  ".join(wrong)
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
