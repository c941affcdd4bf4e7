"""The `realtime` command: serve, process, dev, watch, publish, loadtest, dlq."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from realtime import __version__
from realtime.core import jsoncodec
from realtime.core.logs import bind, redact_url
from realtime.core.logs import setup as setup_logging
from realtime.core.settings import Settings, SettingsError, default_consumer_name

T = TypeVar("T")

logger = logging.getLogger("realtime")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not available on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh loop. Long-running commands install their own SIGINT and
    SIGTERM handlers (a clean stop), so this does not turn Ctrl-C into a cancellation."""
    loop = _new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from realtime.web.app import create_app
    from realtime.web.server import serve

    if not _pipelines_usable(settings, "serve"):  # ingest refuses their window outputs
        return 2
    if args.host:
        settings = settings.with_overrides(host=args.host)
    if args.port is not None:
        settings = settings.with_overrides(port=args.port)
    from realtime.web.auth import unprotected

    open_parts = unprotected(settings)
    if open_parts and not settings.insecure:
        print(
            "realtime serve: refusing to start without authentication: "
            + "; ".join(open_parts)
            + ". For local development only, set REALTIME_INSECURE=1.",
            file=sys.stderr,
        )
        return 2
    for part in open_parts:  # `realtime dev` says it once, plainly, for its children
        logger.log(
            logging.INFO if args.local_dev else logging.WARNING, "REALTIME_INSECURE=1: %s", part
        )
    try:
        app = create_app(settings)
    except ValueError as exc:  # e.g. a public key that cannot be read
        print(f"realtime serve: configuration error: {exc}", file=sys.stderr)
        return 2
    logger.info(
        "web listening on http://%s:%d (Redis %s)",
        settings.host,
        settings.port,
        redact_url(settings.redis_url),
    )
    _warn_unverified_tls(settings)
    if settings.admin_enabled:
        logger.info(
            "Socket.IO Admin UI on namespace /admin (%s; extra origin: %s)",
            "read-only" if settings.admin_read_only else "read-write",
            settings.admin_origin or "none",
        )
    _run(serve(app, settings))
    return 0


def _warn_unverified_tls(settings: Settings) -> None:
    if settings.redis_url.startswith("rediss://") and not settings.redis_tls_verify:
        logger.warning(
            "REALTIME_REDIS_TLS_VERIFY=0: Redis's TLS certificate is not verified "
            "(encrypted, but open to a man in the middle)"
        )


def cmd_process_check(settings: Settings, args: argparse.Namespace) -> int:
    """`realtime process --check`: exit 1 when this worker's heartbeat is stale."""
    from processors.worker.heartbeat import check

    consumer = args.consumer or settings.consumer
    if not args.consumer and settings.consumer == default_consumer_name():
        # The default name has this (new) process's pid in it: it names no worker.
        print(
            "realtime process --check: set REALTIME_CONSUMER (or --consumer) to the "
            "worker's consumer name",
            file=sys.stderr,
        )
        return 2
    result = _run(check(settings, consumer))
    print(result.message, file=sys.stderr if result.status else sys.stdout)
    return result.status


def cmd_process(settings: Settings, args: argparse.Namespace) -> int:
    from processors.worker.process import run_worker

    if args.check:
        return cmd_process_check(settings, args)
    if not _pipelines_usable(settings, "process"):  # refused before doing anything
        return 2
    if args.consumer:
        settings = settings.with_overrides(consumer=args.consumer)
    bind(consumer=settings.consumer)
    logger.info("worker using Redis %s", redact_url(settings.redis_url))
    _warn_unverified_tls(settings)
    _run(run_worker(settings, burst=args.burst))
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from realtime.dev.command import run_dev
    from realtime.web.extensions import ExtensionError, load

    try:  # here, in one line, rather than as the web child's exit status
        load(settings.extensions)
    except ExtensionError as exc:
        print(f"realtime dev: configuration error: {exc}", file=sys.stderr)
        return 2
    port = args.port if args.port is not None else settings.port
    return _run(run_dev(port, demo=not args.no_demo, ingest_key=settings.ingest_key))


def _default_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.port}"


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    from realtime.client.watch import check_since, check_topic, server_url, watch

    urls = [server_url(url) for url in args.url or [_default_url(settings)]]
    for topic in args.topics:
        check_topic(topic)
    check_since(args.since)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await watch(
            urls,
            args.topics,
            stop,
            transports=["polling"] if args.polling else None,
            since=args.since,
            snapshot=args.snapshot,
            token=args.token or settings.token or None,
        )

    return _run(main())


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from realtime.client.watch import UsageError, check_topic, publish, refusal, server_url

    url = server_url(args.url or _default_url(settings))
    check_topic(args.topic)
    try:
        data = jsoncodec.loads(args.data)
    except jsoncodec.JSONDecodeError as exc:
        raise UsageError(f"JSON is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError("JSON must be an object, like '{\"value\": 42}'")
    key = args.key or settings.ingest_key
    status, body, retry_after = _run(publish(url, args.topic, data, args.ts, key=key))
    if status != 202:
        print(f"realtime publish: refused: {refusal(status, body, retry_after)}", file=sys.stderr)
        return 1
    print(jsoncodec.dumps(body))
    return 0


def _client_errors(command: str, debug: bool, run: Callable[[], int]) -> int:
    """A client command's mistakes and unreachable servers as one line and a non-zero
    exit; the traceback only with --debug."""
    import aiohttp
    from redis.exceptions import ConnectionError as RedisConnectionError

    from realtime.client.watch import UsageError

    try:
        return run()
    except UsageError as exc:
        print(f"realtime {command}: {exc}", file=sys.stderr)
        return 2
    except (aiohttp.ClientError, RedisConnectionError, OSError, TimeoutError) as exc:
        if debug:
            raise
        print(f"realtime {command}: {_unreachable(exc)}", file=sys.stderr)
        return 1


def _unreachable(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        reason = os.strerror(errno).lower() if errno else str(exc.os_error)
        return (
            f"cannot connect to {exc.host}:{exc.port} ({reason}): is the server running? "
            "(`realtime dev` starts one)"
        )
    return f"{type(exc).__name__}: {exc}"


def cmd_loadtest(settings: Settings, args: argparse.Namespace) -> int:
    from realtime.loadtest import command

    return command.run(
        args,
        _default_url(settings),
        _new_loop,
        default_key=settings.ingest_key,
        default_token=settings.token,
    )


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from processors.worker.dlq import run_dlq

    return _run(run_dlq(settings, args))


def _pipelines_usable(settings: Settings, command: str) -> bool:
    """The pipelines file loads; else its problems are printed for `realtime COMMAND`."""
    from processors.pipelines.config import PipelinesError, load_pipelines

    try:
        load_pipelines(settings.pipelines_file)
    except PipelinesError as exc:
        print(f"realtime {command}: {exc}", file=sys.stderr)
        return False
    return True


def cmd_pipelines_check(settings: Settings, args: argparse.Namespace) -> int:
    from processors.pipelines.config import PipelinesError, describe, load_pipelines

    path = args.file if args.file is not None else settings.pipelines_file
    try:
        config = load_pipelines(path)
    except PipelinesError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(describe(config))
    return 0


# Clients of a running server: a user's mistake or an unreachable server is one line.
CLIENT_COMMANDS = (cmd_watch, cmd_publish)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realtime",
        description="Realtime server for live analytics dashboards.",
        epilog="Configuration comes from the environment (REDIS_URL, PORT, REALTIME_*); "
        "see the README.",
    )
    parser.add_argument("--version", action="version", version=f"realtime {__version__}")
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error instead of one line",
    )
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run a web process (Socket.IO, ingest API, health)")
    serve.add_argument("--host", help="address to bind (default REALTIME_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to bind (default PORT or 8080)")
    serve.add_argument("--local-dev", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    process = sub.add_parser("process", help="run a worker (consumer group on the ingest streams)")
    process.add_argument("--burst", action="store_true", help="exit once no entries are left")
    process.add_argument("--consumer", help="consumer name (default REALTIME_CONSUMER or host-pid)")
    process.add_argument(
        "--check",
        action="store_true",
        help="do not run: exit 1 if the worker named by REALTIME_CONSUMER (or --consumer) "
        "has not heartbeaten recently (a liveness probe); 0 if it has, or if Redis is "
        "unreachable",
    )
    process.set_defaults(func=cmd_process)

    dev = sub.add_parser("dev", help="run everything locally: Redis, web, worker, demo feed")
    dev.add_argument("--port", type=int, help="web port (default PORT or 8080)")
    dev.add_argument("--no-demo", action="store_true", help="do not feed demo metrics")
    dev.set_defaults(func=cmd_dev)

    watch = sub.add_parser(
        "watch",
        help="print the events of topics until Ctrl-C, resuming after reconnects",
        parents=[debug],
    )
    watch.add_argument("topics", nargs="+", metavar="TOPIC")
    watch.add_argument(
        "--url",
        action="append",
        help="server URL or host:port (default http://127.0.0.1:$PORT); repeat it to fail over "
        "between servers",
    )
    watch.add_argument("--polling", action="store_true", help="use HTTP long-polling only")
    watch.add_argument("--token", help="JWT to connect with (default $REALTIME_TOKEN)")
    watch.add_argument("--since", metavar="ID", help="start after this event id (replay from it)")
    watch.add_argument(
        "--snapshot", type=int, metavar="N", help="first print the newest N events of each topic"
    )
    watch.set_defaults(func=cmd_watch)

    publish = sub.add_parser("publish", help="post one event", parents=[debug])
    publish.add_argument("topic", metavar="TOPIC")
    publish.add_argument("data", metavar="JSON", help="the event data, a JSON object")
    publish.add_argument("--ts", type=int, help="event time in epoch milliseconds (default now)")
    publish.add_argument("--url", help="server URL or host:port (default http://127.0.0.1:$PORT)")
    publish.add_argument("--key", help="publish key (default $REALTIME_INGEST_KEY)")
    publish.set_defaults(func=cmd_publish)

    from realtime.loadtest.command import add_arguments as add_loadtest_arguments

    loadtest = sub.add_parser(
        "loadtest", help="simulate N clients and a producer against a deployment; report"
    )
    add_loadtest_arguments(loadtest)
    loadtest.set_defaults(func=cmd_loadtest)

    from processors.worker.dlq import add_parser as add_dlq_parser

    add_dlq_parser(sub).set_defaults(func=cmd_dlq)

    pipelines = sub.add_parser("pipelines", help="stream-processing pipelines")
    pipelines_sub = pipelines.add_subparsers(dest="pipelines_command", required=True)
    check = pipelines_sub.add_parser(
        "check",
        help="validate a pipelines file and print it (exit 2 if invalid)",
        description="Validate a pipelines file (YAML or JSON) as the worker does at start-up "
        "and print the parsed pipelines; exit status 2 and the problems if it is invalid.",
    )
    check.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="default: $REALTIME_PIPELINES, else the built-in default pipelines",
    )
    check.set_defaults(func=cmd_pipelines_check)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"realtime: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        setup_logging(settings)
    except ValueError as exc:
        print(f"realtime: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.func in CLIENT_COMMANDS:
        debug = getattr(args, "debug", False)
        sys.exit(_client_errors(args.command, debug, lambda: args.func(settings, args)))
    sys.exit(args.func(settings, args))
