"""The worker's liveness heartbeat and `realtime process --check` (the k8s liveness
probe), and a worker's clean exit on SIGTERM, with real processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid

import pytest
from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.dev.embedded import free_port
from tests.helpers.clients import post_events
from tests.helpers.processes import ProcessGroup, settings_env

pytestmark = pytest.mark.system


async def check(settings: Settings, **env: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "realtime", "process", "--check",
        env=settings_env(settings, **env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def check_until(settings: Settings, status: int, consumer: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        code, out = await check(settings, REALTIME_CONSUMER=consumer)
        if code == status:
            return out
        assert time.monotonic() < deadline, f"--check kept answering {code}: {out}"
        await asyncio.sleep(0.2)


async def test_check_fails_while_the_worker_is_stuck_and_recovers_with_it(
    settings: Settings, processes: ProcessGroup
) -> None:
    settings = settings.with_overrides(lease_ms=300)  # stale after 3 leases: 0.9 s
    consumer = f"hb-{uuid.uuid4().hex[:8]}"
    worker = processes.worker(settings, REALTIME_CONSUMER=consumer)
    assert "heartbeat" in await check_until(settings, 0, consumer)

    worker.signal(signal.SIGSTOP)  # alive to the process table, but its loop is stuck
    try:
        out = await check_until(settings, 1, consumer)
        assert f"worker {consumer}: no heartbeat for 0.9s (stale)" in out
    finally:
        worker.signal(signal.SIGCONT)
    await check_until(settings, 0, consumer)


async def test_check_needs_a_consumer_name_and_passes_when_redis_is_unreachable(
    settings: Settings,
) -> None:
    code, out = await check(settings)
    assert code == 2
    assert "set REALTIME_CONSUMER" in out

    nowhere = settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    code, out = await check(nowhere, REALTIME_CONSUMER="w1")
    assert code == 0
    assert "cannot reach Redis" in out
    assert "not judging worker w1" in out


async def test_sigterm_finishes_the_batch_acknowledges_releases_and_exits(
    settings: Settings, processes: ProcessGroup, redis: Redis
) -> None:
    keys = Keys.of(settings)
    consumer = f"term-{uuid.uuid4().hex[:8]}"
    web = processes.web(settings)
    worker = processes.worker(settings, REALTIME_CONSUMER=consumer)
    await check_until(settings, 0, consumer)
    events = [{"topic": f"term.{n % 7}", "data": {"n": n}} for n in range(200)]
    for start in range(0, len(events), 50):
        await post_events(web.url, events[start : start + 50])

    worker.signal(signal.SIGTERM)  # while entries are being processed
    assert worker.process is not None
    assert await asyncio.to_thread(worker.process.wait, 30) == 0

    for partition in range(settings.partitions):
        pending = await redis.xpending(keys.ingest(partition), settings.group)
        assert pending["pending"] == 0, f"partition {partition}: {pending}"
        assert await redis.exists(keys.lease(partition)) == 0
    assert await redis.zcard(keys.workers()) == 0
    assert await redis.exists(keys.heartbeat(consumer)) == 0
    code, out = await check(settings, REALTIME_CONSUMER=consumer)
    assert code == 1, out
