"""Promise 7, nobody reads what they may not: tokens on connect, topic grants on
subscribe, publish keys on ingest, and `realtime serve` refusing to run open by accident.

The web app runs in the test's loop against real Redis; clients are python-socketio's.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from realtime.client import ConnectRefused, RealtimeClient, SubscribeError
from realtime.core import jsoncodec
from realtime.core.settings import Settings
from realtime.dev.embedded import free_port
from realtime.web.app import SIO, create_app
from tests.helpers.history import write_history
from tests.helpers.inprocess import serving
from tests.helpers.processes import ProcessGroup, settings_env
from tests.helpers.tokens import INGEST_KEY, INGEST_KEYS, METRICS_KEY, SECRET, hs256


@pytest.fixture
async def secure(settings: Settings) -> AsyncIterator[tuple[str, web.Application]]:
    """The web app with client and ingest auth on (and REALTIME_INSECURE off)."""
    secured = Settings.from_env(
        {"REALTIME_JWT_SECRET": SECRET, "REALTIME_INGEST_KEYS": INGEST_KEYS},
        redis_url=settings.redis_url,
        prefix=settings.prefix,
    )
    async with serving(secured) as served:
        yield served


class Client:
    """A python-socketio client recording refusals, `closing` reasons, updates, disconnects."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
        self.refusals: list[Any] = []
        self.closing: list[Any] = []
        self.updates: list[Any] = []
        self.disconnected = asyncio.Event()
        self.sio.on("connect_error", self.refusals.append)
        self.sio.on("closing", self.closing.append)
        self.sio.on("update", lambda events, _offset=None: self.updates.append(events))
        self.sio.on("disconnect", lambda *reason: self.disconnected.set())

    async def connect(self, url: str, auth: Any = None) -> bool:
        try:
            await self.sio.connect(url, transports=["websocket"], auth=auth, wait_timeout=10)
        except socketio.exceptions.ConnectionError:
            return False
        return True

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, timeout=10)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = Client()
    yield c
    await c.sio.shutdown()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, "A token is required"),
        ({"token": hs256(ttl_s=-5)}, "expired"),
        ({"token": hs256(secret="wrong-secret-" + "w" * 32)}, "signature is invalid"),
        ({"token": "garbage"}, "malformed"),
    ],
)
async def test_connections_without_a_valid_token_are_refused(
    secure: tuple[str, web.Application], client: Client, auth: Any, message: str
) -> None:
    url, _ = secure
    assert not await client.connect(url, auth)
    assert len(client.refusals) == 1
    assert message in client.refusals[0]["message"]
    assert client.refusals[0]["data"] == {"code": "unauthorized"}


@pytest.mark.integration
async def test_wrong_audience_is_refused(settings: Settings, client: Client) -> None:
    aud = settings.with_overrides(jwt_secret=SECRET, jwt_audience="dashboards", insecure=False)
    server = TestServer(create_app(aud), host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        assert not await client.connect(url, {"token": hs256(aud="billing")})
        assert "audience" in client.refusals[0]["message"]
        assert await client.connect(url, {"token": hs256(aud="dashboards")})
    finally:
        await client.sio.disconnect()
        await server.close()


@pytest.mark.integration
async def test_a_metrics_token_cannot_read_billing(
    secure: tuple[str, web.Application], client: Client, redis: Redis, settings: Settings
) -> None:
    """Forbidden with or without `since`/`snapshot`: no room joined, nothing replayed."""
    url, app = secure
    await write_history(redis, settings, "billing.x", range(1000, 1005))
    await write_history(redis, settings, "metrics.cpu", range(1000, 1003))
    assert await client.connect(url, {"token": hs256(["metrics.*"])})
    for request in (
        {"topic": "billing.x"},
        {"topic": "billing.x", "since": "0-0"},
        {"topic": "billing.x", "snapshot": 5},
        {"topic": "billing.x", "since": "1000-0", "snapshot": 5},
    ):
        ack = await client.call("subscribe", request)
        assert (ack["ok"], ack["error"]["code"]) == (False, "forbidden"), ack
        assert "billing.x" in ack["error"]["message"]
        assert "events" not in ack
    # An allowed resume replays its own topic; anything of billing.x would have come first.
    ack = await client.call("subscribe", {"topic": "metrics.cpu", "since": "0-0"})
    assert ack == {"ok": True, "topic": "metrics.cpu", "recovered": True}
    for _ in range(100):
        if client.updates:
            break
        await asyncio.sleep(0.05)
    assert [e["topic"] for batch in client.updates for e in batch] == ["metrics.cpu"] * 3
    sid = client.sio.get_sid("/")
    rooms = app[SIO].rooms(sid, namespace="/")
    assert "metrics.cpu" in rooms
    assert "billing.x" not in rooms


@pytest.mark.integration
async def test_an_expired_token_is_told_and_disconnected(
    secure: tuple[str, web.Application], client: Client
) -> None:
    url, _ = secure
    assert await client.connect(url, {"token": hs256(["*"], ttl_s=1.5)})
    await asyncio.wait_for(client.disconnected.wait(), 10)
    assert client.closing == [
        {"code": "token_expired", "message": "The token has expired; connect with a new one."}
    ]


async def post(url: str, body: Any, key: str | None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/api/v1/events", json=body, headers=headers) as response,
    ):
        return response.status, await response.json(), response.headers


@pytest.mark.integration
async def test_ingest_needs_a_publish_key_within_its_topics(
    secure: tuple[str, web.Application],
) -> None:
    url, _ = secure
    event = {"topic": "billing.x", "data": {"v": 1}}
    status, body, headers = await post(url, event, None)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = await post(url, event, INGEST_KEY + "x")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body, _ = await post(url, [{"topic": "metrics.cpu", "data": {}}, event], METRICS_KEY)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert "billing.x" in body["error"]["message"]
    status, body, _ = await post(url, {"topic": "metrics.cpu", "data": {}}, METRICS_KEY)
    assert status == 202, body
    status, body, _ = await post(url, event, INGEST_KEY)
    assert status == 202, body


def run_serve(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime", "serve", "--port", str(free_port())],
        env=settings_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.system
@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, ["REALTIME_JWT_SECRET", "REALTIME_INGEST_KEYS"]),
        ({"REALTIME_JWT_SECRET": SECRET}, ["REALTIME_INGEST_KEYS"]),
        ({"REALTIME_INGEST_KEYS": INGEST_KEYS}, ["REALTIME_JWT_SECRET"]),
    ],
)
def test_serve_refuses_to_start_without_auth(
    settings: Settings, env: dict[str, str], missing: list[str]
) -> None:
    result = run_serve(settings.with_overrides(insecure=False), **env)
    assert result.returncode == 2, result.stderr
    assert "refusing to start without authentication" in result.stderr
    assert all(name in result.stderr for name in missing)
    assert "REALTIME_INSECURE=1" in result.stderr


@pytest.mark.system
def test_serve_refuses_an_unreadable_public_key(settings: Settings) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----"
    result = run_serve(
        settings.with_overrides(insecure=False),
        REALTIME_JWT_PUBLIC_KEY=pem,
        REALTIME_INGEST_KEYS=INGEST_KEYS,
    )
    assert result.returncode == 2
    assert "REALTIME_JWT_PUBLIC_KEY cannot be read" in result.stderr


@pytest.mark.system
def test_an_insecure_start_warns_every_time(settings: Settings, processes: ProcessGroup) -> None:
    for _ in range(2):
        web = processes.web(settings)
        web.stop()
    log = "\n".join(p.log() for p in processes.started)
    assert log.count("REALTIME_INSECURE=1: Socket.IO connections are not authenticated") == 2
    assert log.count("REALTIME_INSECURE=1: ingest is not authenticated") == 2


@pytest.mark.integration
async def test_the_python_client_presents_and_refreshes_its_token(
    secure: tuple[str, web.Application],
) -> None:
    url, _ = secure
    refused: list[str] = []
    stale = RealtimeClient(url, on_events=lambda events: None, token=hs256(ttl_s=-5))
    with pytest.raises(ConnectRefused, match="expired"):
        await stale.connect()
    await stale.close()
    # A function gives a fresh token on every connect: after `closing` and the server's
    # disconnect, the client connects again by itself and resubscribes.
    issued: list[str] = []

    def token() -> str:
        issued.append(hs256(["metrics.*"], ttl_s=1.5))
        return issued[-1]

    client = RealtimeClient(
        url, on_events=lambda events: None, token=token, on_refused=refused.append,
        reconnection_delay=0.1,
    )  # fmt: skip
    async with client:
        assert (await client.subscribe("metrics.cpu"))["ok"]
        for _ in range(200):
            if client.stats.connects >= 2:
                break
            await asyncio.sleep(0.05)
        assert client.stats.connects >= 2
        assert client.closing is not None
        assert client.closing["code"] == "token_expired"
        with pytest.raises(SubscribeError, match="forbidden"):
            await client.subscribe("billing.x")
    assert len(issued) >= 2
    assert refused == []


@pytest.mark.system
async def test_cli_publish_sends_its_key_and_watch_its_token(
    secure: tuple[str, web.Application], settings: Settings
) -> None:
    url, _ = secure
    env = settings_env(settings)

    async def cli(*args: str, **extra: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "realtime", *args, env={**env, **extra},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, _, err = await cli("publish", "metrics.cpu", "{}", "--url", url)
    assert code == 1
    assert "refused: unauthorized" in err
    code, out, _ = await cli("publish", "metrics.cpu", "{}", "--url", url, "--key", METRICS_KEY)
    assert code == 0, out
    code, out, _ = await cli("publish", "metrics.cpu", "{}", "--url", url,
                             REALTIME_INGEST_KEY=METRICS_KEY)  # fmt: skip
    assert code == 0, out
    code, _, err = await cli("watch", "metrics.cpu", "--url", url, "--token", "bad")
    assert code == 1
    assert "connection refused: The token is malformed." in err


@pytest.mark.integration
async def test_the_raw_refusal_frame(secure: tuple[str, web.Application]) -> None:
    """What a mobile SDK sees: CONNECT_ERROR (`44`) with the message and the code."""
    url, _ = secure
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket") as ws,
    ):
        assert (await ws.receive_str(timeout=10)).startswith("0{")
        await ws.send_str('40{"token":"bad"}')
        frame = await ws.receive_str(timeout=10)
        assert frame.startswith("44")
        assert jsoncodec.loads(frame[2:]) == {
            "message": "The token is malformed.",
            "data": {"code": "unauthorized"},
        }
        await ws.send_str("40" + jsoncodec.dumps({"token": hs256()}))
        assert (await ws.receive_str(timeout=10)).startswith('40{"sid"')
