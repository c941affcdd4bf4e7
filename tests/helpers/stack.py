"""A web and a worker process shared by a module's tests (each module has its own prefix)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from realtime.core.settings import Settings
from realtime.dev.embedded import RedisServer
from tests.helpers.processes import ProcessGroup, RealtimeProcess


def fresh_settings(redis_server: RedisServer) -> Settings:
    """Settings for processes of one test or module: their own key prefix on the shared Redis."""
    return Settings(
        redis_url=redis_server.url,
        prefix=f"t{uuid.uuid4().hex[:12]}:",
        insecure=True,
        partitions=4,
        block_ms=200,
        redis_timeout_s=2.0,
    )


@contextmanager
def running_stack(settings: Settings, log_dir: Path, **web_env: str) -> Iterator[RealtimeProcess]:
    """One web (extra environment `web_env`) and one worker; yields the web process."""
    group = ProcessGroup(log_dir)
    try:
        web = group.web(settings, **web_env)
        group.worker(settings)
        yield web
    finally:
        group.stop_all()
