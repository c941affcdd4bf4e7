"""The Socket.IO Admin UI (https://admin.socket.io, `@socket.io/admin-ui`), off unless
configured.

Not a step of the data path: an operator's window onto the web instances, in namespace
`/admin`. It exists only when both `REALTIME_ADMIN_USER` and `REALTIME_ADMIN_PASSWORD`
are set, and it is read-only unless `REALTIME_ADMIN_READ_ONLY=0`.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import socketio

from realtime.core import errors
from realtime.core.peer import TrustedProxies
from realtime.core.settings import Settings
from realtime.core.throttle import Throttle, locked_out
from realtime.transport.server import SocketServer

logger = logging.getLogger(__name__)

ADMIN_NAMESPACE = "/admin"
STATS_INTERVAL_S = 2.0  # the UI marks a server unhealthy after 10 s without stats
WELCOME_WAIT_S = 5.0  # how long a new admin's welcome waits for its connect to complete
HOSTNAME = socket.gethostname()

# `Traffic` counters -> the aggregated event types the UI charts (and knows).
AGGREGATED = {
    "raw_connections": "rawConnection",
    "raw_disconnections": "rawDisconnection",
    "connections": "connection",
    "disconnections": "disconnection",
    "packets_in": "packetsIn",
    "bytes_in": "bytesIn",
    "packets_out": "packetsOut",
    "bytes_out": "bytesOut",
}
READ_WRITE_FEATURES = ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]


def credentials_check(settings: Settings) -> Callable[[Any], bool]:
    """The `auth` callable for `instrument()`: constant-time comparison of both fields."""
    user = settings.admin_user.encode()
    password = settings.admin_password.encode()

    def check(auth: Any) -> bool:
        if not isinstance(auth, Mapping):
            return False
        given_user = str(auth.get("username", "")).encode()
        given_password = str(auth.get("password", "")).encode()
        # Both comparisons always run, so timing tells nothing about which one failed.
        user_ok = hmac.compare_digest(given_user, user)
        password_ok = hmac.compare_digest(given_password, password)
        return user_ok and password_ok

    return check


def same_origins(
    environ: Mapping[str, Any], proxies: TrustedProxies | Sequence[str] | None = None
) -> list[str]:
    """The page origins that are this request's own. With `proxies`: the request's scheme
    (the client's, `realtime.core.peer`: `X-Forwarded-Proto` counts only from a trusted
    proxy, and `realtime.transport.inbound` has put it in `wsgi.url_scheme`) with its
    `Host`, and with `X-Forwarded-Host` when a trusted proxy sent it (python-engineio
    believes both from anyone, which makes any page same-origin). `proxies=None`:
    python-engineio's rule unchanged (tests/test_upstream_internals.py compares them)."""
    scheme = environ.get("wsgi.url_scheme")
    host = environ.get("HTTP_HOST")
    if not scheme or not host:
        return []
    origins = [f"{scheme}://{host}"]
    forwarded_host = environ.get("HTTP_X_FORWARDED_HOST")
    if proxies is None:
        if "HTTP_X_FORWARDED_PROTO" in environ or forwarded_host is not None:
            fwd_scheme = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
            fwd_host = (forwarded_host or host).split(",")[0].strip()
            origins.append(f"{fwd_scheme}://{fwd_host}")
        return origins
    if scheme == "http":
        # The same host over TLS: what a page behind a TLS-terminating proxy (listed or
        # not) is. Only this host's own pages can have it, so nothing foreign passes.
        origins.append(f"https://{host}")
    trusted = proxies if isinstance(proxies, TrustedProxies) else TrustedProxies(proxies)
    if forwarded_host is not None and trusted.trusts(_peer(environ)):
        origins.append(f"{scheme}://{forwarded_host.split(',')[0].strip()}")
    return origins


def _peer(environ: Mapping[str, Any]) -> str | None:
    return getattr(environ.get("aiohttp.request"), "remote", None)


def cors_allowed_origins(settings: Settings) -> list[str] | Callable[..., bool]:
    """python-engineio's `cors_allowed_origins`: same-origin only (`same_origins`, never
    python-engineio's own rule, which believes anyone's forwarding headers) or the
    configured list, plus the admin UI's origin when the admin UI is on."""
    configured = list(settings.cors_origins)
    admin_origin = admin_only_origin(settings)
    if configured:
        return configured if admin_origin is None else [*configured, admin_origin]
    proxies = TrustedProxies(settings.trusted_proxies)

    def allowed(origin: str | None, environ: Mapping[str, Any]) -> bool:
        if origin == admin_origin or origin in same_origins(environ, proxies):
            return True
        forwarded = "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_HOST" in environ
        if forwarded and not proxies.trusts(_peer(environ)):
            # What an operator behind an unlisted TLS-terminating proxy sees first.
            logger.info(
                "refused origin %s: X-Forwarded-* from %s ignored (not in "
                "REALTIME_TRUSTED_PROXIES)",
                origin,
                _peer(environ),
            )
        return False

    return allowed


def admin_only_origin(settings: Settings) -> str | None:
    """The origin allowed to open `/admin` and nothing else, if there is one."""
    if not settings.admin_enabled or not settings.admin_origin:
        return None
    if settings.admin_origin in settings.cors_origins:
        return None  # explicitly trusted for everything
    return settings.admin_origin


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


# An event for the UI, and the admins it goes to.
Outgoing = tuple[str, Any, tuple[str, ...]]


class AdminUI:
    """The server side of the Admin UI for one `SocketServer` (see the module docstring).

    `watchers`: the admins of this instance that have had their `config` and
    `all_sockets`; each change is sent to those watching when it happened, in order,
    by one task that lives while there is something to send."""

    def __init__(
        self,
        sio: SocketServer,
        settings: Settings,
        *,
        stats_interval_s: float = STATS_INTERVAL_S,
        throttle: Throttle | None = None,
    ) -> None:
        self.sio = sio
        self.throttle = throttle  # failed credentials (realtime.core.throttle)
        self.namespace = ADMIN_NAMESPACE
        self.read_only = settings.admin_read_only
        self.stats_interval_s = stats_interval_s
        self.server_id = str(getattr(sio.manager, "host_id", HOSTNAME))
        self.features = ["AGGREGATED_EVENTS", "ALL_EVENTS"]
        if not self.read_only:
            self.features += READ_WRITE_FEATURES
        self.watchers: set[str] = set()
        self._check = credentials_check(settings)
        self._client_key = secrets.token_bytes(32)
        self._queue: list[Outgoing] = []
        self._sender: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats: asyncio.Task[None] | None = None
        self._started = time.time()
        self._counted = sio.traffic.snapshot()

        if throttle is not None:
            sio.connect_checks[self.namespace] = self._throttled_login
        sio.on("connect", self._admin_connect, namespace=self.namespace)
        sio.on("disconnect", self._admin_disconnect, namespace=self.namespace)
        if not self.read_only:
            sio.on("emit", self._admin_emit, namespace=self.namespace)
            sio.on("join", self._admin_join, namespace=self.namespace)
            sio.on("leave", self._admin_leave, namespace=self.namespace)
            sio.on("_disconnect", self._admin_disconnect_sockets, namespace=self.namespace)
        sio.watcher = self
        sio.manager.room_watcher = self.room_changed

    # -- the admins ---------------------------------------------------------------------

    async def _admin_connect(self, sid: str, environ: Any, auth: Any = None) -> bool:
        if not self._check(auth):
            raise socketio.exceptions.ConnectionRefusedError("authentication failed")
        self._spawn(self._welcome(sid))
        return True

    async def _throttled_login(self, environ: dict[str, Any], auth: Any) -> dict[str, Any] | None:
        """The failed-credential throttle, before python-socketio registers the client
        (`SocketServer.connect_checks`): the Redis calls are awaited while the client is
        in no room of `/admin`, so it hears nothing said there."""
        assert self.throttle is not None
        address = str(environ.get("REMOTE_ADDR", ""))  # the client's: realtime.core.peer
        user = str(auth.get("username", "")) if isinstance(auth, Mapping) else ""
        wait_s = await self.throttle.wait_s(address, user)
        if wait_s:
            return {
                "message": locked_out(wait_s),
                "data": {"code": errors.LIMIT, "retry_after": wait_s},
            }
        if not self._check(auth):
            await self.throttle.failed(address, user)
            return {"message": "authentication failed"}
        return None

    async def _welcome(self, sid: str) -> None:
        """Once the admin's connect has completed (its CONNECT packet sent): its config
        and the sockets as they are now, then every change from now on."""
        manager = self.sio.manager
        deadline = time.monotonic() + WELCOME_WAIT_S
        while not manager.is_connected(sid, self.namespace):
            if time.monotonic() > deadline or sid not in manager.rooms.get(self.namespace, {}).get(
                None, {}
            ):
                return  # refused or gone meanwhile
            await asyncio.sleep(0.01)
        # No suspension from here to the queueing: the snapshot and the changes after it
        # reach this admin in order.
        only = (sid,)
        self._send("config", {"supportedFeatures": self.features}, only)
        self._send("all_sockets", self.all_sockets(), only)
        self.watchers.add(sid)

    async def _admin_disconnect(self, sid: str, *reason: Any) -> None:
        self.watchers.discard(sid)

    # -- what SocketServer and the room registry tell (SocketServer.Watcher) -----------

    def connected(self, sid: str, namespace: str) -> None:
        if self.watchers:
            self._send("socket_connected", (self.serialize(sid, namespace), _iso(time.time())))

    def disconnected(self, sid: str, namespace: str, reason: Any) -> None:
        if self.watchers:
            when = _iso(time.time())
            self._send("socket_disconnected", (namespace, sid, str(reason or ""), when))

    def received(self, sid: str, namespace: str, event: str, topic: str | None) -> None:
        if self.watchers and namespace != self.namespace:
            args: list[Any] = [event] if topic is None else [event, {"topic": topic}]
            self._send("event_received", (namespace, sid, args, _iso(time.time())))

    def upgraded(self, eio_sid: str) -> None:
        if not self.watchers:
            return
        manager = self.sio.manager
        for namespace in list(manager.rooms):
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None:
                update = {"id": sid, "nsp": namespace, "transport": "websocket"}
                self._send("socket_updated", update)

    def room_changed(self, namespace: str, room: Any, sid: str, joined: bool) -> None:
        if self.watchers and room is not None and room != sid:
            event = "room_joined" if joined else "room_left"
            self._send(event, (namespace, room, sid, _iso(time.time())))

    # -- sockets as the UI sees them ------------------------------------------------------

    def client_id(self, eio_sid: str) -> str:
        """An opaque id for an Engine.IO session, which is itself a secret."""
        digest = hmac.new(self._client_key, eio_sid.encode(), hashlib.sha256)
        return digest.hexdigest()[:16]

    def serialize(self, sid: str, namespace: str, eio_sid: str | None = None) -> dict[str, Any]:
        manager = self.sio.manager
        if eio_sid is None:
            eio_sid = manager.eio_sid_from_sid(sid, namespace)
        engine_socket = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        opened_at = float(getattr(engine_socket, "opened_at", 0.0) or 0.0)
        return {
            "id": sid,
            "clientId": self.client_id(eio_sid) if eio_sid is not None else "",
            "transport": "websocket" if getattr(engine_socket, "upgraded", False) else "polling",
            "nsp": namespace,
            "data": {},
            "handshake": {
                "address": "",
                "headers": {},
                "query": {},
                "issued": opened_at * 1000,
                "time": _iso(opened_at) if opened_at else "",
            },
            "rooms": [room for room in manager.get_rooms(sid, namespace) if room is not None],
        }

    def all_sockets(self) -> list[dict[str, Any]]:
        manager = self.sio.manager
        return [
            self.serialize(sid, namespace, eio_sid)
            for namespace in list(manager.rooms)
            for sid, eio_sid in list(manager.get_participants(namespace, None))
        ]

    # -- sending --------------------------------------------------------------------------

    def _send(self, event: str, data: Any, to: tuple[str, ...] | None = None) -> None:
        """Queue `event` for `to` (default: the admins watching now); sent in order."""
        self._queue.append((event, data, tuple(self.watchers) if to is None else to))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_queued())

    async def _send_queued(self) -> None:
        try:
            while self._queue:
                queued, self._queue = self._queue, []
                for event, data, admins in queued:
                    for sid in admins:
                        # Straight to this instance's admin: not through the fan-out.
                        await self.sio.emit(
                            event, data, to=sid, namespace=self.namespace, ignore_queue=True
                        )
        except Exception:
            logger.exception("sending to the Admin UI failed")
            self._queue = []
        finally:
            self._sender = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- server stats ---------------------------------------------------------------------

    def server_stats(self) -> dict[str, Any]:
        manager = self.sio.manager
        sockets = list(self.sio.eio.sockets.values())
        names = set(manager.rooms) | set(self.sio.handlers) | set(self.sio.namespace_handlers)
        names |= set(self.sio.first)  # the project's own (`/`)
        return {
            "serverId": self.server_id,
            "hostname": HOSTNAME,
            "pid": os.getpid(),
            "uptime": time.time() - self._started,
            "clientsCount": len(sockets),
            "pollingClientsCount": sum(1 for s in sockets if not s.upgraded),
            "aggregatedEvents": self.aggregated_events(),
            "namespaces": [
                {"name": name, "socketsCount": len(manager.rooms.get(name, {}).get(None, {}))}
                for name in sorted(names)
            ],
        }

    def aggregated_events(self) -> list[dict[str, Any]]:
        """What was counted since the last call, in the UI's aggregated events."""
        now = self.sio.traffic.snapshot()
        counted, self._counted = self._counted, now
        timestamp = int(time.time()) * 1000
        return [
            {"timestamp": timestamp, "type": kind, "count": now[name] - counted[name]}
            for name, kind in AGGREGATED.items()
            if now[name] > counted[name]
        ]

    async def _emit_stats(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            try:
                # Through the fan-out: every instance's admins get every instance's stats.
                await self.sio.emit("server_stats", self.server_stats(), namespace=self.namespace)
            except Exception:
                logger.exception("Admin UI server stats failed")

    def start(self) -> None:
        if self._stats is None:
            self._stats = asyncio.ensure_future(self._emit_stats())

    async def aclose(self) -> None:
        tasks = [t for t in (self._stats, self._sender, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stats = None

    # -- read-write mode: what the UI may do (REALTIME_ADMIN_READ_ONLY=0) ----------------

    async def _admin_emit(
        self, sid: str, namespace: str, room_filter: Any, event: str, *data: Any
    ) -> None:
        await self.sio.emit(event, data, to=room_filter, namespace=namespace)

    async def _admin_join(
        self, sid: str, namespace: str, room: Any, room_filter: Any = None
    ) -> None:
        for member, _ in list(self.sio.manager.get_participants(namespace, room_filter)):
            await self.sio.enter_room(member, room, namespace=namespace)

    async def _admin_leave(
        self, sid: str, namespace: str, room: Any, room_filter: Any = None
    ) -> None:
        for member, _ in list(self.sio.manager.get_participants(namespace, room_filter)):
            await self.sio.leave_room(member, room, namespace=namespace)

    async def _admin_disconnect_sockets(
        self, sid: str, namespace: str, close: Any, room_filter: Any = None
    ) -> None:
        for member, _ in list(self.sio.manager.get_participants(namespace, room_filter)):
            await self.sio.disconnect(member, namespace=namespace)


def instrument(
    sio: SocketServer, settings: Settings, throttle: Throttle | None = None
) -> AdminUI | None:
    """The Admin UI's server side for `sio`, or None when it is not configured; start
    it (`start()`, in the running loop) and `aclose()` it on exit."""
    if not settings.admin_enabled:
        return None
    return AdminUI(sio, settings, throttle=throttle)
