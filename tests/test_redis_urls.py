"""REDIS_URL forms: a Unix socket and TLS end to end (web and worker both connect the
way the URL says, nothing else), the Sentinel URL's parsing, and refusals at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import redis
import redis.asyncio

from realtime.core.connections import connect
from realtime.core.keys import Keys
from realtime.core.logs import redact_url
from realtime.core.redisurl import RedisUrlError, SentinelTarget, check_url, parse_sentinel_url
from realtime.core.settings import Settings, SettingsError
from realtime.core.topics import partition_of
from realtime.dev.embedded import RedisServer, RedisServerError, free_port
from tests.helpers.clients import Collector, post_events
from tests.helpers.inprocess import running_app
from tests.helpers.processes import ProcessGroup
from tests.helpers.redis_topology import make_tls_files

# -- parsing (pure) ------------------------------------------------------------------------


@pytest.mark.unit
def test_a_sentinel_url_names_the_sentinels_the_service_and_the_primarys_credentials() -> None:
    url = "redis+sentinel://app:s%40cret@10.0.0.1:26379,[::1]:26380/2/mymaster?sentinel_password=x"
    assert parse_sentinel_url(url) == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("::1", 26380)),
        service="mymaster",
        db=2,
        username="app",
        password="s@cret",
        sentinel_password="x",
    )
    assert parse_sentinel_url("redis+sentinel://h:1/0/s") == SentinelTarget((("h", 1),), "s")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379/0", "scheme must be one of"),
        ("127.0.0.1:6379", "scheme must be one of"),
        ("unix://", "socket's path"),
        ("redis+sentinel://h:26379/0", "/db/service"),
        ("redis+sentinel://h:26379", "/db/service"),
        ("redis+sentinel://h/0/s", "host:port"),
        ("redis+sentinel://h:x/0/s", "no valid port"),
        ("redis+sentinel:///0/s", "no sentinel address"),
        ("redis+sentinel://h:1/zero/s", "not a number"),
        ("redis+sentinel://h:1/0/s?ssl=true", "unknown query argument(s): ssl"),
    ],
)
def test_an_unusable_url_is_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(RedisUrlError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_url(url)


@pytest.mark.unit
def test_the_process_refuses_to_start_naming_redis_url() -> None:
    with pytest.raises(SettingsError, match=r"REDIS_URL is not usable: .*/db/service"):
        Settings.from_env({"REDIS_URL": "redis+sentinel://h:26379/0"})
    for url in ("redis://h:1/0", "rediss://h:1/0?ssl_cert_reqs=none", "unix:///r.sock?db=1"):
        assert Settings.from_env({"REDIS_URL": url}).redis_url == url


@pytest.mark.unit
def test_sentinel_passwords_are_secrets() -> None:
    url = "redis+sentinel://:primary-pw@h:1,h:2/0/s?sentinel_password=sentinel-pw"
    assert set(Settings(redis_url=url).secret_values()) >= {"primary-pw", "sentinel-pw"}
    assert redact_url(url) == "redis+sentinel://:***@h:1,h:2/0/s?sentinel_password=***"


# -- end to end ---------------------------------------------------------------------------


async def delivers_end_to_end(processes: ProcessGroup, settings: Settings) -> None:
    web = processes.web(settings)
    processes.worker(settings)
    client = await Collector().connect(web.url)
    await client.subscribe("url.check")
    ids = await post_events(web.url, [{"topic": "url.check", "data": {"n": n}} for n in range(3)])
    await client.wait_for_id(ids[-1])
    assert [e["id"] for e in client.events] == ids
    await client.close()


def local_addresses(server: RedisServer) -> list[str]:
    """Where each connection to `server` came in (but ours, which uses the TCP port)."""
    with redis.Redis(port=server.port, decode_responses=True) as admin:
        own = admin.client_id()
        return [c["laddr"] for c in admin.client_list() if int(c["id"]) != own]


@pytest.mark.system
async def test_web_and_worker_run_over_a_unix_socket(
    processes: ProcessGroup, prefix: str, tmp_path: Path
) -> None:
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(
        directory=tmp_path / "redis",
        extra_args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"],
    ).start()
    try:
        settings = Settings(redis_url=f"unix://{socket_path}?db=0", prefix=prefix, insecure=True)
        await delivers_end_to_end(processes, settings)
        addresses = local_addresses(server)
        assert len(addresses) >= 3  # web: commands + fan-out listener; worker
        assert all(a.startswith(str(socket_path)) for a in addresses), addresses
    finally:
        processes.stop_all()
        server.cleanup()


@pytest.mark.system
async def test_web_and_worker_run_over_tls(
    processes: ProcessGroup, prefix: str, tmp_path: Path
) -> None:
    ca, cert, key = make_tls_files(tmp_path / "tls")
    tls_port = free_port()
    server = RedisServer(
        directory=tmp_path / "redis",
        extra_args=[
            "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
            "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "no",
        ],
    )  # fmt: skip
    try:
        server.start()
    except RedisServerError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server was built without TLS: {exc}")
        raise
    try:
        # The certificate is verified against our CA (and its 127.0.0.1 address).
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
        settings = Settings(redis_url=url, prefix=prefix, insecure=True)
        await delivers_end_to_end(processes, settings)
        addresses = local_addresses(server)
        assert len(addresses) >= 3
        assert all(a == f"127.0.0.1:{tls_port}" for a in addresses), addresses
        processes.stop_all()

        # As on Heroku: a bare rediss:// URL (set by the provider) to a certificate no
        # trusted CA signed. Verified, nothing starts; with REALTIME_REDIS_TLS_VERIFY=0 the
        # whole path runs, encrypted, and each process says verification is off.
        bare = Settings(redis_url=f"rediss://127.0.0.1:{tls_port}/0", prefix=prefix)
        verified = bare.with_overrides(insecure=True)
        client = connect(verified)
        try:
            with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY"):
                await client.ping()
        finally:
            await client.aclose()
        unverified = verified.with_overrides(redis_tls_verify=False)
        first = len(processes.started)
        await delivers_end_to_end(processes, unverified)
        warning = "REALTIME_REDIS_TLS_VERIFY=0: Redis's TLS certificate is not verified"
        assert all(warning in p.log() for p in processes.started[first:]), processes.logs()
    finally:
        processes.stop_all()
        server.cleanup()


@pytest.mark.integration
async def test_ingest_waiting_for_a_replica_that_is_not_there_answers_503(
    settings: Settings, redis: redis.asyncio.Redis
) -> None:
    """The session's Redis has no replica: the write happens, the WAIT falls short."""
    settings = settings.with_overrides(wait_replicas=1, redis_timeout_s=0.4)
    event = {"topic": "url.wait", "data": {}, "key": "once"}
    async with running_app(settings) as url, aiohttp.ClientSession() as http:
        for _attempt in range(2):  # the retry with the same key stores nothing new
            async with http.post(url + "/api/v1/events", json=event) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                body = await response.json()
                assert body["error"]["code"] == "unavailable"
                assert "not confirmed by enough replicas" in body["error"]["message"]
    stream = Keys(settings.prefix).ingest(partition_of("url.wait", settings.partitions))
    assert await redis.xlen(stream) == 1


@pytest.mark.integration
async def test_a_burst_of_commands_waits_for_the_pool_instead_of_failing(
    settings: Settings,
) -> None:
    """A connect storm: more history reads at once than the pool has connections. Each
    waits for a connection (redis-py's plain pool raised "Too many connections", and
    the subscribes were answered `unavailable`)."""
    from realtime.core.connections import POOL_SIZE

    client = connect(settings)
    try:
        key = Keys(settings.prefix).topic("storm")
        await client.xadd(key, {"ts": "1", "data": "{}"})
        burst = [client.xrevrange(key, count=1) for _ in range(3 * POOL_SIZE)]
        replies = await asyncio.gather(*burst)
        assert all(len(reply) == 1 for reply in replies)
    finally:
        await client.aclose()
