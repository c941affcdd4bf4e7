"""The `realtime loadtest` command line: arguments, the run, and what it prints."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from realtime.core import jsoncodec


def _signal(value: str) -> int:
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown signal {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="deployment base URL (default http://127.0.0.1:$PORT)")
    parser.add_argument("-n", "--clients", type=int, default=100, help="simulated clients (100)")
    parser.add_argument(
        "--topics", type=int, help="topics, clients spread evenly (10, at most --clients)"
    )
    parser.add_argument(
        "--rate", type=float, default=10.0, help="events/s published over all topics (10)"
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of publishing after the ramp (30)"
    )
    parser.add_argument(
        "--ramp-concurrency", type=int, default=100, help="connections opened at once (100)"
    )
    parser.add_argument(
        "--polling-share", type=float, default=0.0, help="fraction of clients on long-polling (0)"
    )
    parser.add_argument("--payload-bytes", type=int, default=0, help="padding in each event (0)")
    parser.add_argument(
        "--stamped",
        action="store_true",
        help="time deliveries at the socket (kernel receive timestamps, Linux), not when "
        "this process got round to them (if it falls far behind, two packets read together "
        "both get the later one's time: high percentiles then read high)",
    )
    parser.add_argument(
        "--no-deflate", action="store_true", help="do not offer permessage-deflate (browsers do)"
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="subscribe again without `since` after a reconnect (to see what that misses)",
    )
    parser.add_argument(
        "--drain", type=float, default=5.0, help="seconds to wait for late deliveries (5)"
    )
    restart = parser.add_argument_group("restart a target instance mid-run")
    restart.add_argument("--restart-cmd", help="shell command that restarts an instance")
    restart.add_argument("--kill-pid", type=int, help="send --kill-signal to this pid instead")
    restart.add_argument(
        "--kill-signal", type=_signal, default=signal.SIGTERM, help="signal for --kill-pid (TERM)"
    )
    restart.add_argument(
        "--restart-at", type=float, help="seconds into publishing (default: half of --duration)"
    )
    gate = parser.add_argument_group("pass/fail (exit status 1 when broken)")
    gate.add_argument(
        "--max-loss", type=float, default=0.0, help="largest loss fraction accepted (0)"
    )
    gate.add_argument("--max-p99-ms", type=float, help="largest delivery p99 accepted")
    parser.add_argument(
        "--key", help="publish key for the ingest API (default $REALTIME_INGEST_KEY)"
    )
    parser.add_argument("--token", help="JWT the clients connect with (default $REALTIME_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for CI)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def run(
    args: argparse.Namespace,
    default_url: str,
    new_loop: Callable[[], asyncio.AbstractEventLoop],
    *,
    default_key: str = "",
    default_token: str = "",
) -> int:
    from realtime.loadtest.report import Progress, format_table
    from realtime.loadtest.runner import LoadTest, LoadTestConfig, LoadTestError

    try:
        config = LoadTestConfig(
            url=args.url or default_url,
            clients=args.clients,
            topics=args.topics if args.topics is not None else min(10, max(args.clients, 1)),
            rate=args.rate,
            duration_s=args.duration,
            ramp_concurrency=args.ramp_concurrency,
            polling_share=args.polling_share,
            payload_bytes=args.payload_bytes,
            deflate=not args.no_deflate,
            stamped=args.stamped,
            resume=not args.no_resume,
            drain_s=args.drain,
            restart_cmd=args.restart_cmd,
            kill_pid=args.kill_pid,
            kill_signal=args.kill_signal,
            restart_at_s=args.restart_at,
            max_loss=args.max_loss,
            max_p99_ms=args.max_p99_ms,
            key=args.key or default_key,
            token=args.token or default_token,
        )
        test = LoadTest(config, None if args.quiet else Progress(sys.stderr))
    except ValueError as exc:
        print(f"realtime loadtest: {exc}", file=sys.stderr)
        return 2

    async def main() -> dict[str, object]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, task.cancel)
        return await test.run()

    loop = new_loop()
    try:
        result = loop.run_until_complete(main())
    except LoadTestError as exc:
        print(f"\nrealtime loadtest: {exc}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("\nrealtime loadtest: interrupted", file=sys.stderr)
        return 130
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    if args.json:
        print(jsoncodec.dumps(result))
    else:
        print(format_table(result))
    return 0 if result["ok"] else 1
