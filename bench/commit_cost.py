"""Benchmark: what the worker's fenced commit and read cost Redis per event, counted in
instructions (valgrind's callgrind), so a busy machine does not blur it.

    .venv/bin/python -m bench.commit_cost [--events 30208] [--topics 1000] [--baseline DIR]

Starts `redis-server` under `valgrind --tool=callgrind` and, per row, counts the
instructions Redis executes between two `callgrind_control` marks:

- commit: `FencedPartition.commit` of pass-through batches of --batch events over
  --topics topics (history XADD, the topic directory, `XTRIM MINID` by a 15-minute
  retention, one PUBLISH per topic, XACK), planned before the count starts as one
  partition's worker plans them, with ids as ingest gives them at --rate events/s;
- fenced read: `FencedPartition.read` of --batch ingest entries, then their XACK in a
  `FencedPartition.commit`, as the worker acknowledges them (a read after a commit may
  go without Lua: processors/worker/fencing.py);
- plain read: the same XREADGROUP and XACK sent as commands (no script, no fence).

With --baseline DIR (a checkout of another version) the commit and fenced read rows
are counted again with that version's code, in a process of its own: a change as a
ratio. Time under callgrind means nothing; the counts barely move from run to run and
not at all with the machine's load, which CPU time per event on a shared machine does.
Needs `valgrind` (and `redis-server`) on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Callgrind:
    """A redis-server under callgrind, and the instruction count between two marks."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="bench-callgrind-")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={self.folder}/out",
                "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def zero(self) -> None:
        subprocess.run(
            ["callgrind_control", "-z", str(self.process.pid)], check=True, capture_output=True
        )

    def count(self) -> int:
        """Instructions since `zero` (a dump, read back)."""
        before = set(glob.glob(f"{self.folder}/out.*"))
        subprocess.run(
            ["callgrind_control", "-d", str(self.process.pid)], check=True, capture_output=True
        )
        for _ in range(600):
            for path in set(glob.glob(f"{self.folder}/out.*")) - before:
                with open(path) as file:
                    for line in file:
                        if line.startswith(("summary:", "totals:")):
                            return int(line.split()[1])
            time.sleep(0.1)  # callgrind writes the dump in its own time
        raise RuntimeError("callgrind wrote no dump")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


async def connected(url: str) -> Redis:
    redis = Redis.from_url(url)
    for _ in range(300):
        try:
            await redis.ping()
            return redis
        except (OSError, RedisConnectionError):
            await asyncio.sleep(0.1)
    raise RuntimeError("redis-server under valgrind did not start")


async def commit_row(redis: Redis, grind: Callgrind, args: argparse.Namespace) -> float:
    """Instructions per event of the fenced commit (this process's code)."""
    from processors.pipelines.retention import Retention
    from processors.pipelines.transform import TopicEvent, group_by_topic
    from processors.worker.fencing import CommitPlan, FencedPartition
    from processors.worker.history_writes import HistoryTargets
    from realtime.core.keys import Keys
    from realtime.core.wire import UpdateEncoder

    keys = Keys(f"cost{uuid.uuid4().hex[:6]}:")
    await redis.set(keys.lease(0), "token")
    await redis.xgroup_create(keys.ingest(0), "g", id="0", mkstream=True)
    part = FencedPartition(
        redis, keys, 0, token="token", group="g", consumer="c", history_maxlen=1000
    )
    encoder = UpdateEncoder(keys)
    # One for the whole run, as a worker's partition keeps it (what it remembers per
    # topic, such as the last trim, is the worker's).
    targets = HistoryTargets(keys, Retention(default_keep_ms=900_000))
    rnd = random.Random(1)
    names = [f"metrics.host{i:04d}" for i in range(args.topics)]
    plans, n = [], 0
    for _ in range(args.events // args.batch):
        events = []
        for _ in range(args.batch):
            # ids as Redis gives them to ingest at --rate events/s
            ms = 1_700_000_000_000 + n * 1000 // args.rate
            n += 1
            data = {"value": round(rnd.gauss(50, 15), 3)}
            events.append(TopicEvent(names[rnd.randrange(args.topics)], f"{ms}-{n}", ms, data))
        plans.append(
            CommitPlan(
                history=[targets.write(e.topic, e.id, e.ts, e.data, e.raw) for e in events],
                publishes=encoder.encode_updates(group_by_topic(events)),
                acks=[f"{ms}-{k}" for k in range(args.batch)],
            )
        )
    await part.commit(plans[0])  # loads the script, creates the keys
    grind.zero()
    for plan in plans[1:]:
        if await part.commit(plan) is not None:
            raise RuntimeError("a commit failed")
    counted: int = (len(plans) - 1) * args.batch
    return grind.count() / counted


async def read_row(redis: Redis, grind: Callgrind, args: argparse.Namespace, fenced: bool) -> float:
    """Instructions per event of reading and acknowledging ingest entries."""
    from processors.worker.fencing import CommitPlan, FencedPartition
    from realtime.core.keys import Keys

    keys = Keys(f"cost{uuid.uuid4().hex[:6]}:")
    stream = keys.ingest(0)
    await redis.set(keys.lease(0), "token")
    rnd = random.Random(1)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(args.events):
            topic = f"metrics.host{rnd.randrange(args.topics):04d}"
            data = json.dumps({"value": round(rnd.gauss(50, 15), 3)})
            pipe.xadd(stream, {"topic": topic, "data": data, "ts": str(1_700_000_000_000 + i)})
        await pipe.execute()
    await redis.xgroup_create(stream, "g", id="0")
    part = FencedPartition(
        redis, keys, 0, token="token", group="g", consumer="c", history_maxlen=1000
    )
    await part.read(1)  # loads the script
    grind.zero()
    read = 0
    while True:
        if fenced:
            ids = [e.id for e in (await part.read(args.batch)).entries]
        else:
            reply: Any = await redis.xreadgroup("g", "c", {stream: ">"}, count=args.batch)
            ids = [i for i, _ in reply[0][1]] if reply else []
        if not ids:
            break
        read += len(ids)
        if fenced:
            await part.commit(CommitPlan(acks=ids))
        else:
            await redis.xack(stream, "g", *ids)
    count = grind.count()
    if hasattr(part, "close"):  # not in every version
        await part.close()
    return count / read


async def rows(args: argparse.Namespace, plain: bool) -> dict[str, float]:
    grind = Callgrind()
    try:
        redis = await connected(grind.url)
    except RuntimeError:
        grind.close()
        raise
    try:
        found = {"commit": await commit_row(redis, grind, args)}
        found["fenced read"] = await read_row(redis, grind, args, fenced=True)
        if plain:
            found["plain read"] = await read_row(redis, grind, args, fenced=False)
        return found
    finally:
        await redis.aclose()
        grind.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_208)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--rate", type=int, default=100_000, help="events/s the commit's ids are spaced for"
    )
    parser.add_argument("--baseline", metavar="DIR", help="also count the code in DIR")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # the baseline's rows, printed as JSON
        print(json.dumps(asyncio.run(rows(args, plain=False))))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed (apt-get install valgrind)")
    now = asyncio.run(rows(args, plain=True))
    before: dict[str, float] = {}
    if args.baseline:
        code = os.path.abspath(args.baseline)
        out = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                "--events",
                str(args.events),
                "--topics",
                str(args.topics),
                "--batch",
                str(args.batch),
                "--rate",
                str(args.rate),
            ],
            cwd=code,
            env={**os.environ, "PYTHONPATH": code},
            capture_output=True,
            text=True,
            check=True,
        )
        before = json.loads(out.stdout.splitlines()[-1])
    print(
        f"Redis instructions per event (callgrind), {args.events} events, {args.topics} "
        f"topics, batches of {args.batch}"
    )
    print(f"{'row':<14}{'now':>12}{'before':>12}{'now/before':>12}")
    for name, value in now.items():
        old = before.get(name)
        ratio = f"{value / old:>11.2f}x" if old else f"{'':>12}"
        print(f"{name:<14}{value:>12,.0f}{old or 0:>12,.0f}{ratio}")


if __name__ == "__main__":
    main()
