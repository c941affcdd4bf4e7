"""The Socket.IO Admin UI namespace: off by default, behind its own credentials, read-only
unless asked, and its cross-origin allowance limited to `/admin`. Real `realtime serve`
processes (python-socketio's instrumentation patches engine classes process-wide)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import socketio

from realtime.core import jsoncodec
from realtime.core.settings import Settings
from tests.helpers.processes import ProcessGroup

pytestmark = pytest.mark.system

ADMIN = {"username": "ops", "password": "Adm1n-pa55-only-for-this-test"}
ADMIN_ENV = {"REALTIME_ADMIN_USER": ADMIN["username"], "REALTIME_ADMIN_PASSWORD": ADMIN["password"]}
ADMIN_ORIGIN = "https://admin.socket.io"


@asynccontextmanager
async def connected(
    url: str, namespace: str, auth: Any = None, headers: dict[str, str] | None = None
) -> AsyncIterator[socketio.AsyncClient]:
    """A client connected to one namespace; raises socketio.exceptions.ConnectionError."""
    client = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
    try:
        await client.connect(
            url,
            namespaces=[namespace],
            auth=auth,
            headers=headers or {},
            transports=["polling"],
            wait_timeout=10,
        )
        yield client
    finally:
        await client.disconnect()


async def refusal(url: str, namespace: str, **options: Any) -> str:
    """Why the server refused a connection to `namespace`: its connect_error message, or
    the transport's answer when the engine refused the request itself."""
    client = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
    reasons: list[Any] = []
    client.on("connect_error", reasons.append, namespace=namespace)
    try:
        await client.connect(
            url, namespaces=[namespace], transports=["polling"], wait_timeout=10, **options
        )
    except socketio.exceptions.ConnectionError as exc:
        if not reasons or reasons[0] is None:
            return str(exc)
        reason = reasons[0]
        return str(reason.get("message") if isinstance(reason, dict) else reason)
    finally:
        await client.disconnect()
    raise AssertionError(f"{namespace} accepted the connection")


async def test_admin_namespace_needs_the_right_credentials_and_is_read_only(
    settings: Settings, processes: ProcessGroup
) -> None:
    web = processes.web(settings, **ADMIN_ENV)
    config: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async with connected(web.url, "/admin", auth=ADMIN) as admin:

        @admin.on("config", namespace="/admin")  # type: ignore[misc]
        def on_config(data: dict[str, Any]) -> None:
            if not config.done():
                config.set_result(data)

        features = (await asyncio.wait_for(config, 10))["supportedFeatures"]
        # Read-only: nothing that emits, joins, leaves or disconnects clients.
        assert features == ["AGGREGATED_EVENTS"]

    for wrong in (
        {"username": ADMIN["username"], "password": "guess"},
        {"username": "root", "password": ADMIN["password"]},
        None,
    ):
        assert await refusal(web.url, "/admin", auth=wrong) == "authentication failed"
    assert ADMIN["password"] not in web.log()


async def test_admin_origin_may_open_admin_and_nothing_else(
    settings: Settings, processes: ProcessGroup
) -> None:
    web = processes.web(settings, **ADMIN_ENV)
    origin = {"Origin": ADMIN_ORIGIN}
    async with connected(web.url, "/admin", auth=ADMIN, headers=origin) as admin:
        assert admin.connected
    assert await refusal(web.url, "/", headers=origin) == "origin not allowed"
    # Same-origin clients are unaffected.
    async with connected(web.url, "/") as client:
        assert client.connected


async def test_without_credentials_there_is_no_admin_namespace(
    settings: Settings, processes: ProcessGroup
) -> None:
    web = processes.web(settings)
    assert await refusal(web.url, "/admin", auth=ADMIN) == "Unable to connect"
    # ...and no extra origin is allowed: the engine refuses it outright.
    reason = await refusal(web.url, "/", headers={"Origin": ADMIN_ORIGIN})
    assert "400" in reason
