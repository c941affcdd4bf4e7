"""Issue 15 V7 / item 6: failed credentials are throttled per client address and per
credential, in Redis (realtime/core/throttle.py), for `/metrics` Basic auth, the Admin
UI and publish keys. Guessers play from 127.0.0.2 and up; the legitimate client from
127.0.0.1 (Linux routes all of 127/8 to loopback)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from realtime.core import jsoncodec
from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.settings import IngestKeySpec, Settings
from realtime.core.throttle import Policy, Throttle, refusal_wait_ms
from realtime.dev.embedded import RedisServer
from realtime.ingest.publish_keys import IngestKeys
from tests.helpers.inprocess import running_app
from tests.helpers.redis_topology import ClusterSet
from tests.test_metrics import basic

OWNER = "127.0.0.1"
GUESSER = "127.0.0.2"
USER, PASSWORD = "admin", "p" * 20
KEY = "k" * 32
FREE = 3


# -- the policy (pure) ----------------------------------------------------------------------


@pytest.mark.unit
def test_lockouts_double_after_the_free_failures_up_to_the_maximum() -> None:
    policy = Policy(free=3, max_lockout_s=10)
    assert [policy.lockout_ms(n) for n in range(1, 10)] == [
        0, 0, 0, 1000, 2000, 4000, 8000, 10_000, 10_000,
    ]  # fmt: skip
    assert policy.lockout_ms(10_000) == 10_000  # no overflow
    assert policy.window_ms == 20_000
    assert not Policy(free=0).enabled


@pytest.mark.unit
def test_a_credentials_lockout_holds_only_addresses_that_failed() -> None:
    assert refusal_wait_ms(-2, -2, address_failed=True) == 0
    assert refusal_wait_ms(1500, -2, address_failed=False) == 1500
    assert refusal_wait_ms(-2, 4000, address_failed=False) == 0  # a clean address: checked
    assert refusal_wait_ms(-2, 4000, address_failed=True) == 4000
    assert refusal_wait_ms(1000, 4000, address_failed=True) == 4000


# -- against the app and real Redis ---------------------------------------------------------


@pytest.fixture
def secured(settings: Settings) -> Settings:
    return settings.with_overrides(
        insecure=False,
        admin_user=USER,
        admin_password=PASSWORD,
        ingest_keys=(IngestKeySpec(KEY),),
        auth_failures=FREE,
        auth_lockout_max_s=600.0,
    )


@asynccontextmanager
async def http_from(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


Attempt = Callable[[aiohttp.ClientSession, str], Any]


async def metrics_status(
    http: aiohttp.ClientSession, url: str, password: str, headers: dict[str, str] | None = None
) -> tuple[int, str | None]:
    headers = {**basic(USER, password), **(headers or {})}
    async with http.get(f"{url}/metrics", headers=headers) as response:
        return response.status, response.headers.get("Retry-After")


async def publish_status(
    http: aiohttp.ClientSession, url: str, key: str, headers: dict[str, str] | None = None
) -> tuple[int, str | None]:
    event = {"topic": "metrics.cpu", "data": {"v": 1}}
    async with http.post(
        f"{url}/api/v1/events",
        data=jsoncodec.dumps(event),
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    ) as response:
        return response.status, response.headers.get("Retry-After")


async def age(settings: Settings, kind: str, address: str, credential: str, failures: int) -> None:
    """Earlier failures, as the app would have counted them: a long lockout to test in."""
    redis = connect(settings)
    try:
        throttle = Throttle(redis, Keys.of(settings), kind, Policy.of(settings))
        for _ in range(failures):
            await throttle.failed(address, credential)
    finally:
        await redis.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("door", ["metrics", "ingest"])
async def test_guessing_from_one_address_is_locked_out_and_the_owner_is_not(
    secured: Settings, door: str
) -> None:
    right = PASSWORD if door == "metrics" else KEY
    attempt = metrics_status if door == "metrics" else publish_status
    kind = "admin" if door == "metrics" else "ingest"
    async with (
        running_app(secured) as url,
        http_from(GUESSER) as guesser,
        http_from(OWNER) as owner,
    ):
        answers = []
        for n in itertools.count():
            # A different wrong secret each time, and a forged X-Forwarded-For: the
            # guesser is not a trusted proxy, so it stays one address.
            forged = {"X-Forwarded-For": f"198.51.100.{n}"}
            status, retry_after = await attempt(guesser, url, f"wrong-guess-{n:024d}", forged)
            answers.append(status)
            if status == 429 or n == 20:
                break
        assert answers[: FREE + 1] == [401] * (FREE + 1)
        assert answers[-1] == 429
        assert int(retry_after or 0) >= 1
        # Long lockouts from here on (as after a few more minutes of guessing).
        if door == "metrics":
            await age(secured, kind, GUESSER, USER, 10)
        else:
            await age(secured, kind, GUESSER, "", 10)
        # Locked out, even the right secret is refused unchecked: it tells nothing.
        assert (await attempt(guesser, url, right))[0] == 429
        # The owner, at another address, is not held up (the username is the same).
        expected = 200 if door == "metrics" else 202
        assert (await attempt(owner, url, right))[0] == expected
        # Refusals are counted.
        async with owner.get(f"{url}/metrics", headers=basic(USER, PASSWORD)) as r:
            text = await r.text()
        assert f'realtime_auth_throttled_total{{kind="{kind}"}}' in text
        line = next(
            x
            for x in text.splitlines()
            if x.startswith(f'realtime_auth_throttled_total{{kind="{kind}"}}')
        )
        assert float(line.split()[-1]) >= 2


@pytest.mark.integration
async def test_a_revoked_key_tried_from_many_addresses_is_locked_out(secured: Settings) -> None:
    revoked = "r" * 32
    async with running_app(secured) as url:
        for n in range(2, 2 + FREE + 1):  # one failure from each of a few addresses
            async with http_from(f"127.0.0.{n}") as http:
                assert (await publish_status(http, url, revoked))[0] == 401
        # More failures elsewhere: a lockout of the key long enough to test in.
        presented = IngestKeys(()).presented(f"Bearer {revoked}")
        assert presented is not None
        await age(secured, "ingest", "192.0.2.200", presented, 10)
        async with http_from("127.0.0.20") as http:
            # A new address is checked once (401); having failed, it meets the key's lockout.
            assert (await publish_status(http, url, revoked))[0] == 401
            assert (await publish_status(http, url, revoked))[0] == 429
            # The right key from there is not the revoked one: checked.
            assert (await publish_status(http, url, KEY))[0] == 202


@pytest.mark.integration
async def test_admin_ui_connects_are_throttled(secured: Settings) -> None:
    async def connect(address: str, password: str) -> str:
        async with http_from(address) as http:
            client = socketio.AsyncClient(http_session=http, reconnection=False)
            refusals: list[Any] = []
            client.on("connect_error", refusals.append, namespace="/admin")
            try:
                await client.connect(
                    url,
                    namespaces=["/admin"],
                    auth={"username": USER, "password": password},
                    transports=["websocket"],
                    wait_timeout=10,
                )
            except socketio.exceptions.ConnectionError:
                return str(refusals[0]["message"] if refusals else "?")
            await client.disconnect()
            return "connected"

    async with running_app(secured) as url:
        answers = [await connect(GUESSER, f"wrong-{n}") for n in range(FREE + 1)]
        assert answers == ["authentication failed"] * (FREE + 1)
        await age(secured, "admin", GUESSER, USER, 10)
        assert "Too many failed attempts" in await connect(GUESSER, PASSWORD)
        assert await connect(OWNER, PASSWORD) == "connected"


@pytest.mark.integration
async def test_redis_down_fails_open_but_still_refuses_bad_credentials(
    own_redis: RedisServer, secured: Settings
) -> None:
    settings = secured.with_overrides(redis_url=own_redis.url, redis_timeout_s=0.5)
    async with running_app(settings) as url, http_from(GUESSER) as http:
        own_redis.stop()
        statuses = [(await metrics_status(http, url, f"wrong-{n}"))[0] for n in range(FREE + 3)]
        assert statuses == [401] * (FREE + 3)
        assert (await metrics_status(http, url, PASSWORD))[0] == 200


@pytest.mark.system
async def test_the_throttle_on_a_redis_cluster(tmp_path: Path, prefix: str) -> None:
    """Each subject's pair of keys shares a hash tag; the pipelines span the shards."""
    cluster = ClusterSet(tmp_path / "cluster").start()
    settings = Settings(redis_url=cluster.url, prefix=prefix, redis_cluster=True)
    redis = connect(settings)
    try:
        throttle = Throttle(redis, Keys.of(settings), "ingest", Policy(free=2))
        assert await throttle.wait_s("192.0.2.1", "key") == 0
        for _ in range(6):  # 2 free, then 1, 2, 4 and 8 s
            await throttle.failed("192.0.2.1", "key")
        assert 1 <= await throttle.wait_s("192.0.2.1", "key") <= 8
        assert await throttle.wait_s("192.0.2.9", "key") == 0  # has not failed
        await throttle.failed("192.0.2.9", "key")
        assert await throttle.wait_s("192.0.2.9", "key") >= 1  # now meets the key's lockout
    finally:
        await redis.aclose()
        cluster.cleanup()
