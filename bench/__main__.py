"""`python -m bench`: run the scenarios against realtime and the reference servers in one
invocation and print medians, ratios and noise (see docs/benchmarks.md and bench/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.servers import LABELS, NODE, SERVER_KINDS, BenchError, node_ready
from realtime.core import jsoncodec


def _cpu(value: str) -> int:
    cpu = int(value)
    if cpu not in os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f"CPU {cpu} is not available to this process")
    return cpu


def _names(allowed: tuple[str, ...] | list[str]) -> Any:
    def parse(value: str) -> list[str]:
        names = [n.strip() for n in value.split(",") if n.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad) or 'empty list'}; choose from {', '.join(allowed)}"
            )
        return names

    return parse


def _realtime_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("REALTIME_"):
        raise argparse.ArgumentTypeError(f"expected REALTIME_NAME=VALUE, got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark realtime against stock python-socketio and Node socket.io, "
        "same machine, same load generator, same run.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, ~1 minute")
    size.add_argument("--full", action="store_true", help="long version: 10,000 idle, 5 s steps")
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat everything; medians (default 1)"
    )
    parser.add_argument(
        "--scenarios",
        type=_names(list(scenarios.SCENARIOS)),
        default=list(scenarios.SCENARIOS),
        help=f"comma-separated subset of {','.join(scenarios.SCENARIOS)}",
    )
    parser.add_argument(
        "--servers",
        type=_names(SERVER_KINDS),
        default=list(SERVER_KINDS),
        help=f"comma-separated subset of {','.join(SERVER_KINDS)}",
    )
    parser.add_argument("--server-cpu", type=_cpu, default=0, help="core of the server under test")
    parser.add_argument(
        "--client-cpu", type=_cpu, default=1, help="core of the load generator, Redis, publisher"
    )
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="clients do not offer permessage-deflate (browsers do, so by default they do)",
    )
    parser.add_argument(
        "--ours-env",
        metavar="REALTIME_X=V",
        action="append",
        type=_realtime_setting,
        default=[],
        help="a setting for our web and worker processes, e.g. REALTIME_BATCH_TICK_MS=0 "
        "(repeatable; the references ignore REALTIME_* variables)",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON ('-': stdout)"
    )
    parser.add_argument(
        "--log-dir", type=Path, help="server and publisher logs (default: a temp dir)"
    )
    return parser


def titles(profile: scenarios.Profile) -> dict[str, str]:
    return {
        "idle": f"idle x{profile.idle_clients:,}",
        "fanout": f"fan-out 1x{profile.fanout_subscribers:,}",
        "topics": f"fan-out {profile.topics}x{profile.per_topic}",
        "small-topics": f"fan-out {profile.small_topics:,}x1",
        "two-instances": f"2 instances 1x{profile.fanout_subscribers:,}",
        "four-instances": f"4 instances, 1 hosts the topic, {profile.hosted_rate:g} events/s",
        "pipeline": f"pipeline {profile.pipeline_subscribers:,}x{profile.pipeline_rate:g}/s",
    }


async def run(args: argparse.Namespace, profile: scenarios.Profile, log_dir: Path) -> list[Any]:
    # SIGTERM and Ctrl-C cancel the run, so every server and Redis it started is stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    bench = scenarios.Bench.pinned(
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        log_dir=log_dir,
        profile=profile,
        deflate=not args.no_deflate,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    redis = bench.redis
    all_runs = []
    try:
        for n in range(args.runs):
            results: dict[str, dict[str, Any]] = {}
            for name in args.scenarios:
                for kind in args.servers:
                    if name == "pipeline" and kind != "ours":
                        continue
                    bench.progress(f"[run {n + 1}/{args.runs}] {name}: {LABELS[kind]}")
                    metrics = await scenarios.SCENARIOS[name](bench, kind)
                    results.setdefault(name, {})[kind] = metrics
            all_runs.append(results)
    finally:
        redis.cleanup()
    return all_runs


def main() -> int:
    args = build_parser().parse_args()
    if args.runs < 1:
        print("python -m bench: --runs must be >= 1", file=sys.stderr)
        return 2
    if args.server_cpu == args.client_cpu:
        print("python -m bench: --server-cpu and --client-cpu must differ", file=sys.stderr)
        return 2
    if NODE in args.servers and (why := node_ready()):
        print(f"python -m bench: the Node reference cannot run: {why}", file=sys.stderr)
        return 2
    # Children inherit the environment; only ours reads REALTIME_* variables.
    os.environ.update(dict(args.ours_env))
    profile = scenarios.QUICK if args.quick else scenarios.FULL if args.full else scenarios.DEFAULT
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="realtime-bench-"))
    started = time.monotonic()
    try:
        import uvloop

        runs = uvloop.run(run(args, profile, log_dir))
    except BenchError as exc:
        print(f"python -m bench: {exc}\n(logs in {log_dir})", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("python -m bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    results = report.collect(runs)
    document = {
        "machine": {
            "cpus": os.cpu_count(),
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load": os.getloadavg(),
        },
        "options": {
            "profile": "quick" if args.quick else "full" if args.full else "default",
            "runs": args.runs,
            "deflate_offered": not args.no_deflate,
            "ours_env": dict(args.ours_env),
            "p99_limit_ms": scenarios.P99_LIMIT_MS,
            "loss_limit": scenarios.LOSS_LIMIT,
            "profile_values": profile.__dict__,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "results": results,
        "ratios": report.ratios(results),
    }
    if args.json:
        text = jsoncodec.dumps(document)
        if args.json == "-":
            print(text)
            return 0
        Path(args.json).write_text(text + "\n")
    print(report.table(results, titles(profile)))
    print(
        f"\nmedians of {args.runs} run(s); server on CPU {args.server_cpu}, load generator + "
        f"Redis + publisher/worker on CPU {args.client_cpu}; {document['elapsed_s']} s; "
        f"logs in {log_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
