"""Benchmark: the pure aggregation path on one core, against pass-through, in one run.

    .venv/bin/python -m bench.aggregate [--topics 1000] [--events 200000] [--runs 5]

Feeds the same ingest entries (as the worker gets them from Redis: bytes fields) through

- passthrough: decode_entry + passthrough (today's worker transform);
- aggregate: decode_entry + Pipelines.plan (default pipelines: pass-through and 1s, 10s,
  1m windows per `metrics.*` topic) + Aggregator.feed, and the timer (advance) once per
  simulated second;
- aggregate+ckpt/N: the same, plus a checkpoint (serialising every changed topic's window
  state) every N entries: per 256-entry batch (the worst case) and every 10,000 entries
  (about once a second at these rates: what processors/pipelines/partition_windows.py recommends).

All topics sit in one partition (one Aggregator): the worst case for one worker core.
Entries arrive in ingest order at --rate events per simulated second in total, with event
times jittered up to 300 ms behind ingest (within the 1 s lateness). Prints events/s per
path (median of --runs, the paths interleaved) and the ratio to pass-through.
No Redis, no I/O: this measures the CPU cost the pipelines add per event.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable

import orjson

from processors.pipelines.config import default_pipelines
from processors.pipelines.partition_windows import Aggregator
from processors.pipelines.plan import Pipelines
from processors.pipelines.transform import decode_entry, passthrough

Entry = tuple[bytes, dict[bytes | str, bytes | str]]


def make_entries(topics: int, events: int, rate: int, seed: int = 1) -> list[Entry]:
    rnd = random.Random(seed)
    names = [f"metrics.host{i:04d}" for i in range(topics)]
    start = 1_700_000_000_000
    entries: list[Entry] = []
    for i in range(events):
        ms = start + i * 1000 // rate
        ts = ms - rnd.randint(0, 300)
        topic = names[rnd.randrange(topics)]
        data = orjson.dumps({"value": round(rnd.gauss(50, 15), 3), "host": topic[-4:]})
        fields: dict[bytes | str, bytes | str] = {
            b"topic": topic.encode(),
            b"ts": str(ts).encode(),
            b"data": data,
        }
        entries.append((f"{ms}-{i % 7}".encode(), fields))
    return entries


def run_passthrough(entries: list[Entry]) -> int:
    produced = 0
    for entry_id, fields in entries:
        produced += len(passthrough(decode_entry(entry_id, fields)))
    return produced


def run_aggregate(entries: list[Entry], checkpoint_every: int) -> int:
    pipelines = Pipelines(default_pipelines())
    aggregator = Aggregator(pipelines)
    produced = 0
    next_tick = 0
    for n, (entry_id, fields) in enumerate(entries, 1):
        event = decode_entry(entry_id, fields)
        ms = int(event.id.partition("-")[0])
        if ms >= next_tick:  # the worker's timer, once per second of ingest time
            produced += len(aggregator.advance(ms))
            next_tick = ms + 1000
        plan = pipelines.plan(event)
        produced += plan.passthrough is not None
        for feed in plan.feeds:
            produced += len(aggregator.feed(feed, event))
        if checkpoint_every and n % checkpoint_every == 0:
            aggregator.checkpoint(event.id)
    return produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=20_000, help="events per simulated second")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    print(f"generating {args.events} entries over {args.topics} topics ...", flush=True)
    entries = make_entries(args.topics, args.events, args.rate)
    # A worker holds one batch of entries, not 200,000: keep the generated input out of the
    # garbage collector's scans so they do not bill either path.
    gc.collect()
    gc.freeze()
    paths: dict[str, Callable[[], int]] = {
        "passthrough": lambda: run_passthrough(entries),
        "aggregate": lambda: run_aggregate(entries, 0),
        "aggregate+ckpt/256": lambda: run_aggregate(entries, 256),
        "aggregate+ckpt/10000": lambda: run_aggregate(entries, 10_000),
    }
    rates: dict[str, list[float]] = {name: [] for name in paths}
    produced: dict[str, int] = {}
    for run in range(args.runs):
        for name, path in paths.items():
            started = time.perf_counter()
            produced[name] = path()
            rates[name].append(len(entries) / (time.perf_counter() - started))
        print(f"run {run + 1}/{args.runs} done", flush=True)

    simulated_s = args.events / args.rate
    print(
        f"\n{args.topics} topics x 3 windows (1s, 10s, 1m), {args.events} events, "
        f"{simulated_s:.0f} s of simulated time, one partition, median of {args.runs} runs"
    )
    base = statistics.median(rates["passthrough"])
    print(f"{'path':<22}{'events/s':>12}{'vs passthrough':>16}{'events out':>12}")
    for name in paths:
        median = statistics.median(rates[name])
        print(f"{name:<22}{median:>12,.0f}{median / base:>15.2f}x{produced[name]:>12,}")


if __name__ == "__main__":
    main()
