"""The Socket.IO Admin UI namespace: off by default, behind its own credentials, read-only
unless asked, and its cross-origin allowance limited to `/admin`; what it tells the UI
(the events and payloads `@socket.io/admin-ui` listens for: `config`, `all_sockets`,
`socket_connected`, `socket_updated`, `socket_disconnected`, `room_joined`, `room_left`,
`event_received`, `server_stats`), for websocket and long-polling clients, and never a
client's token, headers or Engine.IO session id. Real `realtime serve` processes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import socketio

from realtime.core import jsoncodec
from realtime.core.settings import Settings
from tests.helpers.clients import Collector, post_events
from tests.helpers.processes import ProcessGroup
from tests.helpers.tokens import SECRET, hs256

pytestmark = pytest.mark.system

ADMIN = {"username": "ops", "password": "Adm1n-pa55-only-for-this-test"}
ADMIN_ENV = {"REALTIME_ADMIN_USER": ADMIN["username"], "REALTIME_ADMIN_PASSWORD": ADMIN["password"]}
ADMIN_ORIGIN = "https://admin.socket.io"


@asynccontextmanager
async def connected(
    url: str,
    namespace: str,
    auth: Any = None,
    headers: dict[str, str] | None = None,
    on: dict[str, Callable[..., Any]] | None = None,
) -> AsyncIterator[socketio.AsyncClient]:
    """A client connected to one namespace, with its handlers `on` registered before it
    connects (the server may send right after the connect); raises
    socketio.exceptions.ConnectionError."""
    client = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)
    for event, handler in (on or {}).items():
        client.on(event, handler, namespace=namespace)
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

    def on_config(data: dict[str, Any]) -> None:
        if not config.done():
            config.set_result(data)

    async with connected(web.url, "/admin", auth=ADMIN, on={"config": on_config}):
        features = (await asyncio.wait_for(config, 10))["supportedFeatures"]
        # Read-only: nothing that emits, joins, leaves or disconnects clients. ALL_EVENTS:
        # the UI shows its Sockets, Rooms, Clients and Events pages only with it.
        assert features == ["AGGREGATED_EVENTS", "ALL_EVENTS"]

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
    assert await refusal(web.url, "/admin", auth=ADMIN) == "Invalid namespace"
    # ...and no extra origin is allowed: the engine refuses it outright.
    reason = await refusal(web.url, "/", headers={"Origin": ADMIN_ORIGIN})
    assert "400" in reason


# -- what the UI is told ------------------------------------------------------------------

Received = tuple[str, tuple[Any, ...]]


class AdminFeed:
    """An Admin UI stand-in: connects to `/admin` as the UI does and records every event."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def on_any(self, event: str, *args: Any) -> None:
        self.received.append((event, args))

    async def wait_for(
        self, what: str, match: Callable[..., bool] = lambda *args: True, timeout: float = 15
    ) -> tuple[Any, ...]:
        """The arguments of the first `what` event for which `match(*args)` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event, args in list(self.received):
                if event == what and match(*args):
                    return args
            await asyncio.sleep(0.05)
        seen = [event for event, _ in self.received]
        raise AssertionError(f"no matching {what} within {timeout}s; received {seen}")

    def counted(self, kind: str) -> int:
        """The sum of the aggregated events of one type in every server_stats so far."""
        return sum(
            entry["count"]
            for event, args in list(self.received)
            if event == "server_stats"
            for entry in args[0]["aggregatedEvents"]
            if entry["type"] == kind
        )

    def text(self) -> str:
        return json.dumps(self.received)


@asynccontextmanager
async def admin_feed(url: str) -> AsyncIterator[AdminFeed]:
    feed = AdminFeed()
    async with connected(url, "/admin", auth=ADMIN, on={"*": feed.on_any}):
        await feed.wait_for("all_sockets")
        yield feed


def socket_of(sid: str) -> Callable[..., bool]:
    return lambda socket, *rest: socket["id"] == sid


async def test_admin_ui_sees_sockets_rooms_and_namespaces_and_no_secrets(
    settings: Settings, processes: ProcessGroup
) -> None:
    web = processes.web(settings, REALTIME_JWT_SECRET=SECRET, **ADMIN_ENV)
    token = hs256(("metrics.*",))
    header_secret = f"header-secret-{uuid.uuid4().hex}"
    client = socketio.AsyncClient(reconnection=False, json=jsoncodec, handle_sigint=False)

    async with admin_feed(web.url) as admin:
        # A dashboard on the fast path: a websocket from the start, with a token and a
        # header the UI must never see.
        await client.connect(
            web.url,
            auth={"token": token},
            headers={"X-Api-Key": header_secret},
            transports=["websocket"],
            wait_timeout=10,
        )
        sid = client.get_sid("/")
        eio_sid = client.eio.sid
        (socket, when) = await admin.wait_for("socket_connected", socket_of(sid))
        assert socket["nsp"] == "/"
        assert socket["transport"] == "websocket"
        assert socket["rooms"] == [sid]
        assert socket["clientId"]
        assert socket["clientId"] != eio_sid
        assert socket["handshake"]["headers"] == {}
        assert socket["handshake"]["query"] == {}
        assert socket["handshake"]["issued"] > 0
        assert when

        ack = await client.call("subscribe", {"topic": "metrics.cpu"}, timeout=10)
        assert ack["ok"], ack
        await admin.wait_for("room_joined", lambda *a: a[:3] == ("/", "metrics.cpu", sid))
        await admin.wait_for(
            "event_received",
            lambda *a: a[:3] == ("/", sid, ["subscribe", {"topic": "metrics.cpu"}]),
        )

        # An admin arriving now finds the socket in its topic's room, and namespace `/`
        # with its socket in the stats (the UI lists namespaces from these).
        async with admin_feed(web.url) as late:
            (sockets,) = await late.wait_for("all_sockets")
            (mine,) = [s for s in sockets if s["id"] == sid]
            assert mine["nsp"] == "/"
            assert sorted(mine["rooms"]) == sorted(["metrics.cpu", sid])
            assert mine["clientId"] == socket["clientId"]
            (stats,) = await late.wait_for(
                "server_stats",
                lambda stats: {"name": "/", "socketsCount": 1} in stats["namespaces"],
            )
            assert {"name": "/admin", "socketsCount": 2} in stats["namespaces"]
            assert stats["clientsCount"] == 3
            assert stats["pollingClientsCount"] >= 2
            late_text = late.text()

        ack = await client.call("unsubscribe", {"topic": "metrics.cpu"}, timeout=10)
        assert ack["ok"], ack
        await admin.wait_for("room_left", lambda *a: a[:3] == ("/", "metrics.cpu", sid))

        await client.disconnect()
        (nsp, gone, reason, _) = await admin.wait_for(
            "socket_disconnected", lambda n, i, *r: i == sid
        )
        assert (nsp, gone) == ("/", sid)
        assert reason
        # Counted: the connect, subscribe and unsubscribe it sent, its connection.
        await admin.wait_for("server_stats", lambda s: admin.counted("rawDisconnection") >= 1)
        assert admin.counted("packetsIn") >= 3
        assert admin.counted("bytesIn") > 0
        assert admin.counted("connection") >= 1

    for text in (admin.text(), late_text):
        for secret in (token, header_secret, eio_sid):
            assert secret not in text


async def test_admin_ui_follows_an_upgrade_and_counts_deliveries(
    settings: Settings, processes: ProcessGroup
) -> None:
    web = processes.web(settings, **ADMIN_ENV)
    processes.worker(settings)
    async with admin_feed(web.url) as admin:
        # The default: long-polling first, then the upgrade to a websocket.
        dashboard = await Collector("dashboard").connect(web.url)
        sid = dashboard.client.get_sid("/")
        (socket, _) = await admin.wait_for("socket_connected", socket_of(sid))
        if socket["transport"] == "polling":  # connected before the upgrade completed
            await admin.wait_for(
                "socket_updated", lambda s: s == {"id": sid, "nsp": "/", "transport": "websocket"}
            )
        assert dashboard.transport == "websocket"

        await dashboard.subscribe("metrics.load")
        await admin.wait_for("room_joined", lambda *a: a[:3] == ("/", "metrics.load", sid))
        await post_events(
            web.url, [{"topic": "metrics.load", "data": {"value": n}} for n in range(5)]
        )
        await dashboard.wait_for(5)
        # Each update packet handed to a connection is counted (per delivery batch on
        # the fast path), with its bytes.
        await admin.wait_for(
            "server_stats", lambda s: admin.counted("packetsOut") >= dashboard.packets
        )
        assert admin.counted("bytesOut") > 0
        await dashboard.close()
        await admin.wait_for("socket_disconnected", lambda n, i, *r: i == sid)
