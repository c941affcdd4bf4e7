"""Redis unavailable: ingest answers 503 and readiness fails; both recover when it is back,
and a restart that lost everything is reported to resuming clients as a gap. (A restart
with AOF, which loses nothing, is in test_fault_web.py.)"""

from __future__ import annotations

import aiohttp
import pytest

from realtime.core.settings import Settings
from realtime.dev.embedded import RedisServer
from tests.helpers.clients import Watcher, post_events
from tests.helpers.inprocess import running_app
from tests.helpers.processes import ProcessGroup


@pytest.mark.integration
async def test_ingest_is_503_while_redis_is_down_and_recovers(
    own_redis: RedisServer, prefix: str
) -> None:
    settings = Settings(redis_url=own_redis.url, prefix=prefix, insecure=True, redis_timeout_s=1.0)
    event = {"topic": "metrics.cpu", "data": {"value": 1}}
    async with running_app(settings) as url, aiohttp.ClientSession() as http:
        await post_events(url, event, http)

        own_redis.stop()
        async with http.post(url + "/api/v1/events", json=event) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert (await response.json())["error"]["code"] == "unavailable"
        async with http.get(url + "/readyz") as response:
            assert response.status == 503
        async with http.get(url + "/healthz") as response:
            assert response.status == 200
        async with http.get(url + "/metrics") as response:
            text = await response.text()
        assert 'realtime_redis_errors_total{component="ingest"} 1.0' in text
        assert 'realtime_ingest_requests_total{status="503"} 1.0' in text

        own_redis.start()
        async with http.get(url + "/readyz") as response:
            assert response.status == 200
        [event_id] = await post_events(url, event, http)
        assert event_id


@pytest.mark.system
async def test_clients_learn_of_the_gap_when_a_redis_restart_lost_everything(
    own_redis: RedisServer, prefix: str, processes: ProcessGroup
) -> None:
    """Without persistence a restart loses history and the ingest streams. The web
    instance cannot catch its subscriptions up, so it drops their connections; the
    client reconnects, its resume is answered `recovered: false`, and every event
    accepted from then on reaches it."""
    settings = Settings(
        redis_url=own_redis.url,
        prefix=prefix,
        insecure=True,
        block_ms=200,
        lease_ms=1000,
        redis_timeout_s=1.0,
    )
    web = processes.web(settings)
    processes.worker(settings)
    watcher = await Watcher(web.url).start("restart.t")
    [first] = await post_events(web.url, {"topic": "restart.t", "data": {"n": 0}})
    await watcher.wait_for_ids({"restart.t": first})

    own_redis.stop()  # no persistence: streams, groups and history are gone when it returns
    own_redis.start()
    await watcher.wait_until(lambda: bool(watcher.gaps), "gap report")
    [(topic, ack)] = watcher.gaps
    assert (topic, ack["recovered"], ack["events"]) == ("restart.t", False, [])

    ids = await post_events(
        web.url, [{"topic": "restart.t", "data": {"n": n}} for n in range(1, 11)]
    )
    await watcher.wait_for_ids({"restart.t": ids[-1]})
    assert watcher.topic_ids("restart.t") == [first, *ids]
    assert watcher.client.stats.connects == 2
    await watcher.close()
