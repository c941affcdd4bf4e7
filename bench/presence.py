"""Benchmark: what presence costs Redis, ours (`realtime/delivery/presence.py`: a hash per
topic of instance -> count, a heartbeat per instance) against per-connection presence
(a hash and a sorted set entry per viewer, each refreshed every third of the TTL, as
Centrifugo's Redis presence keeps it), in the same run.

    .venv/bin/python -m bench.presence [--runs 3] [--seconds 20] [--churn 0.01]

Two shapes over 4 instances: 100,000 viewers of one topic, and 10,000 topics of 10
viewers each. Viewers come and go at `--churn` of them per second. Every viewer asked for
`presence` events (the worst case: every topic has watchers on every instance it is on).

No sockets: each instance is a real `Presence` object of the server's module (its own
Redis connection), and the benchmark stands in for what is not Redis: the viewers (it
calls `Presence.viewers` as the hub does), the fan-out listener (a flushed topic is
noted to the other instances, as its note on the topic channel would be) and the clock:
time is simulated in steps of the flush interval (250 ms), each instance flushing,
reaping and emitting once per step as its loop would, so the command counts are per
simulated second, independent of how busy the machine is. Redis CPU is measured (INFO
cpu) and is what varies between runs. Memory is INFO's used_memory_dataset (the data,
without client buffers) over an empty server's, at the end of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from realtime.core.keys import Keys
from realtime.core.metrics import WebMetrics
from realtime.delivery.presence import REAP_EVERY_S, Presence
from realtime.delivery.viewers import viewer_counts
from realtime.dev.embedded import RedisServer

INSTANCES = 4
TTL_S = 15.0  # the per-connection reference's refresh is TTL/3, as our default heartbeat
# Ours runs on a simulated clock that may be slower than Redis's: a TTL of 15 simulated
# seconds could expire in real time and reap a live instance. Its heartbeats (one command
# per instance per TTL/3: 0.8/s at 4 instances) are left out of the figures instead.
OURS_TTL_S = 3600.0
STEP_S = 0.25  # the default flush interval
SHAPES = {"1 topic x 100,000": (1, 100_000), "10,000 topics x 10": (10_000, 10)}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Result:
    commands_per_s: float
    redis_cpu_per_s: float  # Redis CPU seconds per simulated second
    memory_bytes: int


class Viewers:
    """Who watches what, where: (instance, topic) -> count, and a churn that keeps the
    total steady (a random viewer leaves, a new one joins a random instance and topic)."""

    def __init__(self, topics: int, per_topic: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.topics = [f"bench.t{n}" for n in range(topics)]
        self.counts: dict[tuple[int, str], int] = {}
        self.members: list[tuple[int, str]] = []  # one entry per viewer
        for topic in self.topics:
            for _ in range(per_topic):
                self.join(topic)

    def join(self, topic: str | None = None) -> tuple[int, str]:
        where = (self.rng.randrange(INSTANCES), topic or self.rng.choice(self.topics))
        self.counts[where] = self.counts.get(where, 0) + 1
        self.members.append(where)
        return where

    def leave(self) -> tuple[int, str]:
        index = self.rng.randrange(len(self.members))
        self.members[index], self.members[-1] = self.members[-1], self.members[index]
        where = self.members.pop()
        self.counts[where] -= 1
        return where


async def redis_stats(redis: Redis) -> tuple[int, float, int]:
    stats, cpu, memory = (
        await redis.info("stats"),
        await redis.info("cpu"),
        await redis.info("memory"),
    )
    return (
        int(stats["total_commands_processed"]),
        float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        int(memory["used_memory_dataset"]),
    )


async def measured(redis: Redis, seconds: float, run: Callable[[], Awaitable[None]]) -> Result:
    await redis.flushall()
    _, _, empty = await redis_stats(redis)
    await run()  # populate (not measured)
    commands, cpu, _ = await redis_stats(redis)
    await run()  # the simulated `seconds`
    commands2, cpu2, memory = await redis_stats(redis)
    return Result((commands2 - commands) / seconds, (cpu2 - cpu) / seconds, memory - empty)


async def ours(redis: Redis, url: str, viewers: Viewers, seconds: float, churn: float) -> Result:
    keys = Keys(prefix="bench:")
    sent = [0]

    def send(sid: str, frame: Any) -> None:
        sent[0] += 1

    clients = [Redis.from_url(url) for _ in range(INSTANCES)]
    clock = [0.0]
    instances = [
        Presence(
            clients[n],
            keys,
            f"instance-{n}",
            send,
            WebMetrics(),
            ttl_s=OURS_TTL_S,
            clock=lambda: clock[0],
        )
        for n in range(INSTANCES)
    ]
    for (n, topic), count in viewers.counts.items():
        instances[n].viewers(topic, count)
        instances[n].watch(f"watcher-{n}", topic)  # every viewer wants events
    phase = [0]

    async def step(changes: int) -> None:
        for _ in range(changes):
            for n, topic in (viewers.leave(), viewers.join()):
                instances[n].viewers(topic, viewers.counts[(n, topic)])
        flushed = [set(p.local.dirty) for p in instances]
        now = clock[0]
        for n, presence in enumerate(instances):
            await presence.flush(now)
            for other in instances:  # what each instance's fan-out listener would hear
                if other is not presence:
                    for topic in flushed[n]:
                        other.noted(topic)
        if int(now / REAP_EVERY_S) != int((now - STEP_S) / REAP_EVERY_S):
            for presence in instances:
                await presence.reap()
        for presence in instances:
            presence.throttle.expire(now)
            await presence.emit(now)
        clock[0] += STEP_S

    async def run() -> None:
        if phase[0] == 0:  # populate: the first flush writes every count
            phase[0] = 1
            await step(0)
            return
        per_step = churn * len(viewers.members) * STEP_S
        for n in range(int(seconds / STEP_S)):
            await step(int(per_step * (n + 1)) - int(per_step * n))

    try:
        result = await measured(redis, seconds, run)
        # Exact: every topic's count is what the viewers add up to.
        sample = viewers.topics[:: max(len(viewers.topics) // 100, 1)]
        counts = await viewer_counts(redis, keys, sample)
        for topic in sample:
            truth = sum(viewers.counts.get((n, topic), 0) for n in range(INSTANCES))
            assert counts[topic] == truth, (topic, counts[topic], truth)
        return result
    finally:
        for client in clients:
            await client.aclose()


async def per_connection(redis: Redis, viewers: Viewers, seconds: float, churn: float) -> Result:
    """The reference: a hash of viewer -> info and a sorted set of viewer -> expiry per
    topic; each viewer refreshes both every TTL/3; the count is a ZCOUNT of the live."""
    ids: dict[tuple[int, str], list[str]] = {}
    serial = [0]

    def new_id(where: tuple[int, str]) -> str:
        serial[0] += 1
        client = f"c{serial[0]}"
        ids.setdefault(where, []).append(client)
        return client

    def add(pipe: Any, topic: str, client: str) -> None:
        pipe.hset(f"ref:presence:{topic}", client, '{"user":"u","client":"' + client + '"}')
        pipe.zadd(f"ref:presence-exp:{topic}", {client: now_ms() + int(TTL_S * 1000)})

    refresh_every = int(TTL_S / 3 / STEP_S)  # steps between two refreshes of a viewer
    phase = [0]

    async def run() -> None:
        if phase[0] == 0:
            phase[0] = 1
            async with redis.pipeline(transaction=False) as pipe:
                for where, count in viewers.counts.items():
                    for _ in range(count):
                        add(pipe, where[1], new_id(where))
                await pipe.execute()
            return
        per_step = churn * len(viewers.members) * STEP_S
        everyone = [(where[1], c) for where, cs in ids.items() for c in cs]
        changed: set[str] = set()
        steps_per_s = int(1 / STEP_S)
        for n in range(int(seconds / STEP_S)):
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(int(per_step * (n + 1)) - int(per_step * n)):
                    gone = viewers.leave()
                    client = ids[gone].pop()
                    pipe.hdel(f"ref:presence:{gone[1]}", client)
                    pipe.zrem(f"ref:presence-exp:{gone[1]}", client)
                    came = viewers.join()
                    add(pipe, came[1], new_id(came))
                    changed.update((gone[1], came[1]))
                if n % steps_per_s == steps_per_s - 1:
                    # as ours: each instance with watchers reads a changed topic <= 1/s
                    for topic in changed:
                        for _ in range(INSTANCES):
                            pipe.zcount(f"ref:presence-exp:{topic}", now_ms(), "+inf")
                    changed.clear()
                for topic, client in everyone[n % refresh_every :: refresh_every]:
                    add(pipe, topic, client)
                await pipe.execute()

    return await measured(redis, seconds, run)


def summary(values: list[float], digits: int = 0) -> str:
    f = f",.{digits}f"
    return f"{statistics.median(values):{f}} ({min(values):{f}}-{max(values):{f}})"


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(directory=Path(tmp)).start()
        redis = Redis.from_url(server.url)
        try:
            print(f"{INSTANCES} instances, churn {args.churn:.1%}/s, {args.seconds:g} s simulated, "
                  f"medians of {args.runs} (min-max)")  # fmt: skip
            print(f"{'shape':<20} {'presence':<16} {'Redis cmds/s':>24} {'Redis CPU ms/s':>20} "
                  f"{'memory KiB':>20}")  # fmt: skip
            for shape, (topics, per_topic) in SHAPES.items():
                rows: dict[str, list[Result]] = {"ours": [], "per-connection": []}
                for run in range(args.runs):  # interleaved, so a busy moment hits both
                    rows["ours"].append(
                        await ours(
                            redis,
                            server.url,
                            Viewers(topics, per_topic, run),
                            args.seconds,
                            args.churn,
                        )
                    )
                    rows["per-connection"].append(
                        await per_connection(
                            redis, Viewers(topics, per_topic, run), args.seconds, args.churn
                        )
                    )
                for name, results in rows.items():
                    print(
                        f"{shape:<20} {name:<16}"
                        f" {summary([r.commands_per_s for r in results]):>24}"
                        f" {summary([r.redis_cpu_per_s * 1000 for r in results], 1):>20}"
                        f" {summary([r.memory_bytes / 1024 for r in results]):>20}"
                    )
                ratio = statistics.median(
                    r.commands_per_s for r in rows["ours"]
                ) / statistics.median(r.commands_per_s for r in rows["per-connection"])
                cpu_ratio = statistics.median(
                    r.redis_cpu_per_s for r in rows["ours"]
                ) / statistics.median(r.redis_cpu_per_s for r in rows["per-connection"])
                mem_ratio = statistics.median(
                    r.memory_bytes for r in rows["ours"]
                ) / statistics.median(r.memory_bytes for r in rows["per-connection"])
                print(f"{shape:<20} {'ours / ref':<16} {ratio:>23.4f}x {cpu_ratio:>19.4f}x "
                      f"{mem_ratio:>19.4f}x")  # fmt: skip
        finally:
            await redis.aclose()
            server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated time per run")
    parser.add_argument("--churn", type=float, default=0.01, help="viewers changing per second")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
