"""Redis unavailable: ingest answers 503 and readiness fails; both recover when it is back."""

from __future__ import annotations

import asyncio

import aiohttp

from realtime.embedded import RedisServer
from realtime.settings import Settings
from tests.helpers.clients import Collector, post_events
from tests.helpers.inprocess import running_app
from tests.helpers.processes import ProcessGroup


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

        own_redis.start()
        async with http.get(url + "/readyz") as response:
            assert response.status == 200
        [event_id] = await post_events(url, event, http)
        assert event_id


async def test_web_and_worker_deliver_again_after_a_redis_restart(
    own_redis: RedisServer, prefix: str, processes: ProcessGroup
) -> None:
    settings = Settings(
        redis_url=own_redis.url, prefix=prefix, insecure=True, block_ms=200, redis_timeout_s=1.0
    )
    web = processes.web(settings)
    processes.worker(settings)
    client = await Collector().connect(web.url)
    await client.subscribe("restart.t")
    await post_events(web.url, {"topic": "restart.t", "data": {"n": 0}})
    await client.wait_for(1)

    own_redis.stop()  # no persistence: streams and groups are gone when it returns
    own_redis.start()
    # Live fan-out is at-most-once until the listener has resubscribed, so post until one
    # arrives; every later event must then arrive.
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            await post_events(web.url, {"topic": "restart.t", "data": {"n": 1}}, http)
            try:
                await client.wait_for(2, timeout=0.2)
                break
            except AssertionError:
                continue
        ids = await post_events(web.url, [{"topic": "restart.t", "data": {"n": 2}}] * 10, http)
    # Events posted while the worker recovered may still arrive: wait for the last id.
    received = await client.wait_for_id(ids[-1])
    assert [e["id"] for e in received[-10:]] == ids
    await asyncio.wait_for(client.close(), 5)
