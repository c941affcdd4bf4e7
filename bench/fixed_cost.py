"""`python -m bench.fixed_cost --baseline DIR`: our server's CPU per delivery at a fixed
rate, this checkout against the one in DIR (e.g. a `git worktree` of main), interleaved
in one invocation, over a window long enough to average the machine's noise.

For each run and shape (1,000 topics x 1 subscriber, 100 x 10: issue 22 target 4), each
version in turn gets a fresh deployment (web, worker, clients, as `python -m bench`
pins them): `--idle-s` with no traffic (the idle server's CPU), a second at half the
rate, then `--seconds` at `--rate` deliveries/s. Prints each step and, per shape, the
medians with min-max and the median of the per-run ratios (ours / before). Node is not
here: `python -m bench --scenarios small-topics,topics --servers ours,node` compares
against it, with a 4 s window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench import scenarios
from bench.loadgen import Tally, open_clients
from bench.servers import OURS, BenchError

SHAPES = ((1000, 1), (100, 10))  # topics x subscribers each


async def _one(
    bench: scenarios.Bench, code: Path | None, shape: tuple[int, int], args: argparse.Namespace
) -> tuple[float, float]:
    """(server us per delivery at the rate, idle share of a core) of one deployment."""
    n_topics, per_topic = shape
    topics = [f"bench.t{i}" for i in range(n_topics)]
    tally = Tally()
    async with scenarios.deploy(bench, OURS, code=code) as dep:
        clients = await open_clients(
            dep.urls, n_topics * per_topic, lambda i: topics[i % n_topics], tally,
            deflate=bench.deflate,
        )  # fmt: skip
        try:
            if len(clients.clients) != n_topics * per_topic:
                raise BenchError(f"{len(clients.clients)} clients connected")
            await asyncio.sleep(1.0)  # connecting settles
            idle = await scenarios._cpu_rate(dep.servers, args.idle_s)
            await scenarios.run_step(bench, dep, tally, topics, per_topic, args.rate / 2, 1.0)
            step = await scenarios.run_step(
                bench, dep, tally, topics, per_topic, args.rate, args.seconds
            )
            await scenarios.settle(tally)
        finally:
            clients.close()
    if step.delivered != step.expected:
        raise BenchError(f"{step.delivered} of {step.expected} delivered")
    return step.server_cpu_s / step.delivered * 1e6, idle


def _span(values: list[float], fmt: str) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)}-{fmt.format(high)})"


async def run(args: argparse.Namespace) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="fixed-cost-"))
    bench = scenarios.Bench.pinned(
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        log_dir=log_dir,
        profile=scenarios.DEFAULT,
        progress=lambda _line: None,
    )
    redis = bench.redis
    versions: list[tuple[str, Path | None]] = [("before", args.baseline), ("ours", None)]
    found: dict[tuple[tuple[int, int], str], list[tuple[float, float]]] = {}
    try:
        for n in range(args.runs):
            for shape in SHAPES:
                for name, code in versions if n % 2 == 0 else versions[::-1]:
                    us, idle = await _one(bench, code, shape, args)
                    load = os.getloadavg()[0]
                    print(
                        f"run {n + 1} {shape[0]:,}x{shape[1]} {name:6}: {us:6.1f} us/delivery,"
                        f" idle {idle:.2%} of a core (load average {load:.1f})",
                        flush=True,
                    )
                    found.setdefault((shape, name), []).append((us, idle))
    finally:
        redis.cleanup()
    print(f"\nserver CPU per delivery at {args.rate:,.0f}/s for {args.seconds:g} s, medians of"
          f" {args.runs} (min-max)")  # fmt: skip
    for shape in SHAPES:
        ours, before = found[(shape, "ours")], found[(shape, "before")]
        ratios = [o[0] / b[0] for o, b in zip(ours, before, strict=True)]
        print(
            f"{shape[0]:,}x{shape[1]}: ours {_span([o[0] for o in ours], '{:.1f}')} us,"
            f" before {_span([b[0] for b in before], '{:.1f}')} us,"
            f" ours/before {_span(ratios, '{:.2f}x')};"
            f" idle ours {_span([o[1] * 100 for o in ours], '{:.2f}')}%,"
            f" before {_span([b[1] * 100 for b in before], '{:.2f}')}%"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, metavar="DIR", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=5000.0, help="deliveries/s")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    args.baseline = args.baseline.resolve()
    if args.runs < 1 or args.server_cpu == args.client_cpu:
        print("python -m bench.fixed_cost: --runs >= 1, two different cores", file=sys.stderr)
        return 2
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
