"""The load processes of `bench.storm`: many lean Socket.IO clients in one event loop
(realtime.loadtest.wsclient), each with its own JWT, driven over stdin/stdout, one JSON
line per command (`{name: job}`) and one answer:

- `tokens {count}`: make the tokens now, before anything is timed;
- `rate {url, topics, count, concurrency}`: connect, subscribe with a snapshot, wait for
  it, `count` clients -> `{ok, failures, reasons, start, end, ms}`; then closes them;
- `hold {url, topics, count, concurrency}`: subscribers kept connected (`Watcher`);
- `drop {url, window_s}`: abort every socket; each client reconnects within `window_s`
  and subscribes with `since`;
- `report {wait_s}`: when every client recovered (or `wait_s`), their times;
- `verify {last}`: gaps, repeats, and clients behind each topic's last event;
- `close {}`.

    python -m bench.stormload INDEX SOURCE_ADDRESS
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import time
from typing import Any

import jwt

from realtime.core import jsoncodec
from realtime.loadtest import wsclient

SECRET = "bench-storm-secret-" + "s" * 40
SNAPSHOT = 10  # events in each subscribe's snapshot (ours and Node's)
NOFILE = 20_000


# A reconnecting client waits as socket.io-client's defaults make it: a connect
# given up after 20 s, then 1 s, 2 s, 4 s, 5 s, ... between tries, each +-50%.
CONNECT_TIMEOUT_S = 20.0


def retry_delay_s(attempt: int) -> float:
    return min(5.0, 2.0**attempt) * (0.5 + random.random())


def now_ms() -> float:
    return time.time() * 1000.0


def token(child: int, i: int) -> str:
    claims = {"sub": f"user-{child}-{i}", "topics": ["rate.*", "storm.*"]}
    return jwt.encode({**claims, "exp": int(time.time()) + 7200}, SECRET, "HS256")


class Watcher:
    """One storm subscriber: its topic's events checked for gaps and repeats (their
    `seq` grows by `step` per topic), and the times of its reconnect."""

    __slots__ = (
        "acked",
        "client",
        "dups",
        "first_update",
        "gaps",
        "last_id",
        "last_seq",
        "reconnect",
        "recovered",
        "refused",
        "retries",
        "step",
        "token",
        "topic",
    )

    def __init__(self, topic: str, step: int, token: str) -> None:
        self.topic = topic
        self.step = step
        self.token = token
        self.client: wsclient.SioWebSocket | None = None
        self.last_id: str | None = None
        self.last_seq: int | None = None
        self.gaps = 0
        self.dups = 0
        self.refused = 0  # reconnects answered `recovered: false`
        self.retries = 0
        self.reconnect: float | None = None  # wall ms the reconnect began
        self.acked: float | None = None
        self.first_update: float | None = None
        self.recovered: float | None = None  # first event published after `reconnect`

    def on_update(self, client: Any, events: list[Any], at_ms: float) -> None:
        for event in events:
            if event["topic"] != self.topic:
                continue
            data = event["data"]
            seq = data["seq"]
            last = self.last_seq
            if last is not None:
                if seq <= last:
                    self.dups += 1
                    continue
                if seq != last + self.step:
                    self.gaps += (seq - last) // self.step - 1
            self.last_seq = seq
            self.last_id = event["id"]
            if self.reconnect is not None:
                if self.first_update is None:
                    self.first_update = at_ms
                if self.recovered is None and data["t"] >= self.reconnect:
                    self.recovered = at_ms


class Child:
    def __init__(self, index: int, local_host: str) -> None:
        self.index = index
        self.local_host = local_host
        self.tokens: list[str] = []
        self.watchers: list[Watcher] = []
        self.pending: set[asyncio.Task[None]] = set()

    def tokens_for(self, count: int) -> list[str]:
        while len(self.tokens) < count:
            self.tokens.append(token(self.index, len(self.tokens)))
        return self.tokens[:count]

    async def _open(self, url: str, auth: dict[str, Any], **kw: Any) -> wsclient.SioWebSocket:
        kw.setdefault("timeout", 30.0)
        return await wsclient.connect(
            url, auth=auth, deflate=False, local_host=self.local_host, **kw
        )

    async def rate(self, job: dict[str, Any]) -> dict[str, Any]:
        """Connect, subscribe with a snapshot, wait for it: `count` clients."""
        url, topics, count = job["url"], job["topics"], job["count"]
        tokens = self.tokens_for(count)
        gate = asyncio.Semaphore(job["concurrency"])
        clients: list[wsclient.SioWebSocket] = []
        times: list[float] = []
        failures = 0
        reasons: dict[str, int] = {}

        async def one(i: int) -> None:
            nonlocal failures
            async with gate:
                started = time.perf_counter()
                try:
                    client = await self._open(url, {"token": tokens[i]})
                    clients.append(client)
                    ack = await client.call(
                        "subscribe",
                        {"topic": topics[i % len(topics)], "snapshot": SNAPSHOT},
                        timeout=30.0,
                    )
                except (OSError, TimeoutError, ValueError) as exc:
                    failures += 1
                    reason = f"{type(exc).__name__}: {exc}"[:120]
                    reasons[reason] = reasons.get(reason, 0) + 1
                    return
                if not (isinstance(ack, dict) and ack.get("ok")) or len(ack["events"]) != SNAPSHOT:
                    failures += 1
                    reason = str(ack)[:120]
                    reasons[reason] = reasons.get(reason, 0) + 1
                    return
                times.append((time.perf_counter() - started) * 1000)

        start = now_ms()
        await asyncio.gather(*(one(i) for i in range(count)))
        end = now_ms()
        for client in clients:
            client.abort()
        answer = {"ok": len(times), "failures": failures, "start": start, "end": end, "ms": times}
        return {**answer, "reasons": reasons}

    async def hold(self, job: dict[str, Any]) -> dict[str, Any]:
        """`count` subscribers, client i on topic i % len(topics), kept connected."""
        url, topics, count = job["url"], job["topics"], job["count"]
        tokens = self.tokens_for(count)
        self.watchers = [
            Watcher(topics[i % len(topics)], len(topics), tokens[i]) for i in range(count)
        ]
        gate = asyncio.Semaphore(job["concurrency"])

        async def one(w: Watcher) -> None:
            async with gate:
                w.client = await self._open(url, {"token": w.token}, on_update=w.on_update)
                ack = await w.client.call("subscribe", {"topic": w.topic}, timeout=30.0)
                if not (isinstance(ack, dict) and ack.get("ok")):
                    raise RuntimeError(f"subscribe refused: {ack}")
                if w.last_id is None:
                    w.last_id = ack["since"]

        await asyncio.gather(*(one(w) for w in self.watchers))
        return {"connected": len(self.watchers)}

    async def _reconnect(self, url: str, w: Watcher, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        w.reconnect = now_ms()
        attempt = 0
        while True:
            try:
                w.client = await self._open(
                    url, {"token": w.token}, on_update=w.on_update, timeout=CONNECT_TIMEOUT_S
                )
                ack = await w.client.call(
                    "subscribe", {"topic": w.topic, "since": w.last_id}, timeout=30.0
                )
                if not (isinstance(ack, dict) and ack.get("ok")):
                    raise ConnectionError(f"subscribe refused: {ack}")
                w.acked = now_ms()
                if not ack.get("recovered"):
                    w.refused += 1
                return
            except (OSError, TimeoutError, ValueError):
                w.retries += 1
                if w.client is not None:
                    w.client.abort()
                await asyncio.sleep(retry_delay_s(attempt))
                attempt += 1

    def drop(self, job: dict[str, Any]) -> dict[str, Any]:
        """Abort every socket now; each client reconnects within `window_s`."""
        dropped = now_ms()
        for w in self.watchers:
            if w.client is not None:
                w.client.abort()
        for w in self.watchers:
            task = asyncio.create_task(
                self._reconnect(job["url"], w, random.random() * job["window_s"])
            )
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        return {"dropped": dropped}

    async def report(self, job: dict[str, Any]) -> dict[str, Any]:
        """Wait until every client recovered (or `wait_s`); their times."""
        deadline = time.monotonic() + job["wait_s"]
        while time.monotonic() < deadline and (  # noqa: ASYNC110 (polls many clients)
            self.pending or any(w.recovered is None for w in self.watchers)
        ):
            await asyncio.sleep(0.05)
        ws = self.watchers
        return {
            "reconnect": [w.reconnect for w in ws],
            "acked": [w.acked for w in ws],
            "first_update": [w.first_update for w in ws],
            "recovered": [w.recovered for w in ws],
            "retries": sum(w.retries for w in ws),
            "refused": sum(w.refused for w in ws),
        }

    def verify(self, job: dict[str, Any]) -> dict[str, Any]:
        """Gaps, repeats, and clients whose last event is not the topic's last one."""
        last: dict[str, int] = job["last"]
        return {
            "gaps": sum(w.gaps for w in self.watchers),
            "dups": sum(w.dups for w in self.watchers),
            "behind": sum(w.last_seq != last[w.topic] for w in self.watchers),
        }

    def close(self) -> None:
        for task in self.pending:
            task.cancel()
        for w in self.watchers:
            if w.client is not None:
                w.client.abort()
        self.watchers = []


async def child_main(index: int, local_host: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, NOFILE), hard), hard))
    child = Child(index, local_host)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = jsoncodec.loads(line)
        name, job = next(iter(command.items()))
        if name == "rate":
            answer = await child.rate(job)
        elif name == "hold":
            answer = await child.hold(job)
        elif name == "drop":
            answer = child.drop(job)
        elif name == "report":
            answer = await child.report(job)
        elif name == "verify":
            answer = child.verify(job)
        elif name == "close":
            child.close()
            answer = {}
        elif name == "tokens":
            child.tokens_for(job["count"])
            answer = {}
        else:
            answer = {"error": f"unknown command {name!r}"}
        sys.stdout.write(jsoncodec.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    import uvloop

    uvloop.run(child_main(int(sys.argv[1]), sys.argv[2]))
