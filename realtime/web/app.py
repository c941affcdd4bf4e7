"""The web process: aiohttp app with the Socket.IO server, ingest API and health checks.

`create_app(settings)` builds everything from the settings it is given; nothing is
created at import time.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from redis.asyncio import Redis

from processors.pipelines.config import PipelinesConfig, load_pipelines
from processors.pipelines.retention import Retention
from realtime.core import errors, jsoncodec, logs
from realtime.core.connections import connect
from realtime.core.keys import NAMESPACE, Keys
from realtime.core.metrics import WebMetrics
from realtime.core.metrics_server import private_metrics
from realtime.core.settings import Settings
from realtime.core.throttle import Policy, Throttle
from realtime.delivery.directory import DirectoryReader
from realtime.delivery.drain import Drain
from realtime.delivery.history import HistoryReader
from realtime.delivery.hub import Delivery
from realtime.delivery.presence import Presence
from realtime.delivery.recovery import Recorder
from realtime.delivery.sessions import SessionStore
from realtime.delivery.subscriptions import Subscriptions
from realtime.fanout.manager import FanoutManager
from realtime.fanout.sharded import fanout_manager
from realtime.ingest import publish_keys as ingest_auth
from realtime.ingest.api import IngestHandler, IngestWriter
from realtime.ingest.rates import IngestRate
from realtime.transport.server import SocketServer
from realtime.web import admin, auth, dashboard, extensions, request_id
from realtime.web.access import Access
from realtime.web.health import Readiness, healthz
from realtime.web.metrics_http import PublicMetrics, ingest_status_counter
from realtime.web.namespace import TopicNamespace
from realtime.web.presence_http import PRESENCE_PATH, TopicPresence
from realtime.web.recovery import Recovery
from realtime.web.resolutions import Resolutions
from realtime.web.stream import STREAM_PATH, EventStream
from realtime.web.topic_events import EVENTS_PATH, TopicEvents
from realtime.web.topics import TOPICS_PATH, TopicDirectory

logger = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
SIO = web.AppKey("sio", SocketServer)
MANAGER = web.AppKey("manager", FanoutManager)
INGEST = web.AppKey("ingest", IngestWriter)
DELIVERY = web.AppKey("delivery", Delivery)
ACCESS = web.AppKey("access", Access)
INGEST_RATE = web.AppKey("ingest_rate", IngestRate)
METRICS = web.AppKey("metrics", WebMetrics)
DRAIN = web.AppKey("drain", Drain)
PRESENCE = web.AppKey("presence", Presence)
INGEST_PATH = "/api/v1/events"
SOCKETIO_PATH = "socket.io"  # python-socketio's default


def window_outputs(config: PipelinesConfig) -> Callable[[str], str | None]:
    """The pipeline whose window outputs include a topic (by name), memoised per topic."""

    @functools.lru_cache(maxsize=4096)
    def window_output_of(topic: str) -> str | None:
        pipeline = config.derived_from(topic)
        return None if pipeline is None else pipeline.name

    return window_output_of


def create_sio(settings: Settings, manager: FanoutManager) -> SocketServer:
    sio = SocketServer(
        async_mode="aiohttp",
        client_manager=manager,
        json=jsoncodec,
        # Same-origin only unless origins are configured (plus the Admin UI's, if on).
        cors_allowed_origins=admin.cors_allowed_origins(settings),
        ping_interval=settings.ping_interval_ms / 1000,
        ping_timeout=settings.ping_timeout_ms / 1000,
        # Largest packet a client may send (a websocket message, a long-poll POST body):
        # clients send only small requests; past it python-engineio closes the connection.
        max_http_buffer_size=settings.max_message_bytes,
        logger=False,
        engineio_logger=False,
        admin_namespace=admin.ADMIN_NAMESPACE,
        admin_only_origin=admin.admin_only_origin(settings),
        ws_compression=settings.ws_compression,
        backlog_bytes=settings.client_backlog_bytes,
        backlog_packets=settings.client_backlog_packets,
        connect_timeout_s=settings.connect_timeout_s,
        read_timeout_s=settings.read_timeout_s,
        trusted_proxies=settings.trusted_proxies,
        bind_sessions=settings.bind_sessions,
    )
    return sio


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[ACCESS].aclose()
    await app[DELIVERY].aclose()
    await app[REDIS].aclose()


def _recovery_ctx(recovery: Recovery) -> Callable[[web.Application], AsyncIterator[None]]:
    """The recovery log's writer; after the clients were disconnected (on shutdown),
    their sessions' last checkpoints are written, before Redis is closed."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        recovery.store.start()
        yield
        await recovery.aclose()
        await recovery.store.aclose()

    return ctx


async def _disconnect_clients(app: web.Application) -> None:
    """On shutdown, before aiohttp waits for in-flight requests: close every Socket.IO
    connection, which also answers pending long-poll requests; end the SSE streams."""
    app[DRAIN].ending.set()
    await app[SIO].shutdown()


async def _metrics_port_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with private_metrics(app[METRICS], settings.host, settings.metrics_port):
        yield


def _watch(metrics: WebMetrics, sio: SocketServer, delivery: Delivery) -> None:
    """The gauges read at scrape time."""
    metrics.connected_clients.set_function(lambda: sio.connected(NAMESPACE))
    metrics.subscriptions.set_function(delivery.subs.count)
    metrics.sse_readers.set_function(delivery.streams.count)
    if delivery.presence is not None:
        metrics.presence_viewers.set_function(delivery.presence.local.total)
    metrics.watch_backlogs(sio.backlogs)


async def _presence_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the clients are gone (on_shutdown), take this instance out of the counts."""
    app[PRESENCE].start()
    yield
    await app[PRESENCE].aclose()


async def _manager_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[MANAGER].aclose()


def _admin_ctx(ui: admin.AdminUI) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        ui.start()
        yield
        await ui.aclose()

    return ctx


def server_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiohttp's server (`AppRunner`, `TestServer`): its limits.

    aiohttp closes a connection whose next request has not all its headers
    `keepalive_timeout` after the connection opened or the previous response ended, so
    this one value bounds slow headers and idle keep-alive alike (aiohttp's default is
    an hour). Before the first request this needs an aiohttp that arms the timer on
    connect (aio-libs/aiohttp#13681, in the locked 3.14.5; tests/test_upstream_internals.py
    checks it). Bodies are bounded where they are read (ingest, `realtime/transport/inbound.py`)."""
    return {"keepalive_timeout": settings.read_timeout_s}


def oversized_polling(sio: SocketServer, limit: int) -> Middleware:
    """A long-polling POST over `limit` bytes: python-engineio ends the session and then
    waits for the client to collect its CLOSE packet, so the POST is never answered and
    its connection stays. Answer it 413 here, close the connection, end the session."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if (
            request.method != "POST"
            or length is None
            or length <= limit
            or not request.path.startswith(f"/{SOCKETIO_PATH}/")
        ):
            return await handler(request)
        logger.info("refused a long-polling POST of %d bytes (the limit is %d)", length, limit)
        socket = sio.eio.session_for(request)  # not another client's session
        if socket is not None:
            sio.eio.sockets.pop(socket.sid, None)
            await socket.close(wait=False, abort=True, reason=sio.eio.reason.TRANSPORT_ERROR)
        response = web.json_response(
            errors.error_body(errors.TOO_LARGE, f"A message exceeds {limit} bytes."),
            status=413,
            dumps=jsoncodec.dumps,
        )
        response.force_close()
        return response

    return middleware


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unexpected exception becomes a JSON 500 for the caller and a traceback in our log."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response(
            errors.error_body(errors.INTERNAL, "Internal server error."), status=500
        )


def _throttle(redis: Redis, settings: Settings, metrics: WebMetrics, kind: str) -> Throttle:
    """The failed-credential throttle of one kind of credential, counting its refusals."""
    counter = metrics.auth_throttled.labels(kind)
    return Throttle(redis, Keys.of(settings), kind, Policy.of(settings), counter.inc)


def create_app(settings: Settings) -> web.Application:
    logs.quiet_malformed_http()  # also when embedded without `logs.setup` (tests)
    logs.hide_session_ids()
    metrics = WebMetrics()
    manager = fanout_manager(settings)
    sio = create_sio(settings, manager)
    drain = Drain(sio, settings.drain_s, metrics)
    app = web.Application(
        client_max_size=max(settings.max_body_bytes, 1_048_576),
        middlewares=[
            drain.refuse_new_connections(SOCKETIO_PATH),
            ingest_status_counter(metrics, INGEST_PATH),
            oversized_polling(sio, settings.max_message_bytes),
            json_errors,
        ],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[DRAIN] = drain
    redis = connect(settings)  # no I/O until first use; closed by _redis_ctx
    app[REDIS] = redis
    app[INGEST] = IngestWriter(redis, settings)
    app[INGEST_RATE] = IngestRate(redis, Keys(settings.prefix), settings.ingest_rate)
    app.cleanup_ctx.append(_redis_ctx)

    history = HistoryReader(redis, Keys.of(settings), settings.history_maxlen)
    subscriptions = Subscriptions()
    recorder = Recorder(subscriptions.last) if settings.recovery_s > 0 else None
    delivery = Delivery(
        sio,
        history,
        subscriptions,
        manager.channels,
        batch_tick_s=settings.batch_tick_ms / 1000,
        slow_client_s=settings.slow_client_s,
        metrics=metrics,
        recorder=recorder,
    )
    presence = Presence(
        redis,
        Keys.of(settings),
        manager.host_id,
        delivery.send_frame,
        metrics,
        ttl_s=settings.presence_ttl_s,
        flush_s=settings.presence_flush_ms / 1000,
    )
    delivery.presence = presence
    app[PRESENCE] = presence
    app.cleanup_ctx.append(_presence_ctx)
    _watch(metrics, sio, delivery)
    manager.attach(delivery)
    access = Access(settings, sio, auth.verifier(settings))
    app[ACCESS] = access
    recovery = None
    if recorder is not None:
        store = SessionStore(redis, Keys.of(settings), recorder, settings.recovery_s)
        recorder.notify = store.kick
        delivery.log_written = store.write_log
        recovery = Recovery(store, recorder, delivery, access)
        sio.connect_hook = recovery
        app.cleanup_ctx.append(_recovery_ctx(recovery))
    # The pipelines file: ingest refuses its window outputs (a bad file: PipelinesError),
    # `subscribe {resolution: "auto"}` picks among them.
    pipelines = load_pipelines(settings.pipelines_file)
    retention = Retention(pipelines.retention, settings.history_retention_ms)
    resolutions = Resolutions(pipelines, retention)
    topics = TopicNamespace(settings, delivery, access, resolutions, recovery)
    sio.register_first(topics)
    app[DELIVERY] = delivery
    sio.attach(app, socketio_path=SOCKETIO_PATH)
    app[SIO] = sio
    app[MANAGER] = manager
    app.on_shutdown.append(_disconnect_clients)
    app.cleanup_ctx.append(_manager_ctx)
    admin_throttle = _throttle(redis, settings, metrics, "admin")  # the UI and /metrics
    admin_ui = admin.instrument(sio, settings, admin_throttle)
    if admin_ui is not None:
        app.cleanup_ctx.append(_admin_ctx(admin_ui))
    request_id.install(app)

    ingest = IngestHandler(
        INGEST,
        settings,
        window_outputs(pipelines),
        keys=ingest_auth.ingest_keys(settings),
        rate_key=INGEST_RATE,
        metrics=metrics,
        throttle=_throttle(redis, settings, metrics, "ingest"),
    )
    app.router.add_post(INGEST_PATH, ingest.handle)
    app.router.add_get(EVENTS_PATH, TopicEvents(history, auth.verifier(settings)).handle)
    directory = DirectoryReader(
        redis, Keys.of(settings), settings.partitions, settings.directory_idle_s * 1000
    )
    topic_directory = TopicDirectory(directory, auth.verifier(settings), presence.counts)
    app.router.add_get(TOPICS_PATH, topic_directory.handle)
    stream = EventStream(
        settings, delivery.streams, auth.verifier(settings), drain, metrics, sio.start_manager
    )
    app.router.add_get(STREAM_PATH, stream.handle)
    topic_presence = TopicPresence(presence, auth.verifier(settings), ingest)
    app.router.add_get(PRESENCE_PATH, topic_presence.handle)
    app.router.add_get("/metrics", PublicMetrics(metrics, settings, admin_throttle).handle)
    app.cleanup_ctx.append(_metrics_port_ctx)
    app.router.add_get("/readyz", Readiness(REDIS, lambda: drain.draining).handle)
    app.router.add_get("/healthz", healthz)
    app[extensions.REALTIME] = extensions.Realtime(app[INGEST], ingest, access)
    extensions.install(extensions.load(settings.extensions), sio, app, topics)  # ExtensionError
    dashboard.add_routes(app, Path(settings.dashboard_dir) if settings.dashboard_dir else None)
    return app
