"""A publisher process for the benchmarks, driven over stdin/stdout (see servers.Publisher).

Modes, i.e. how each server is published to:
- `stream`: XADD straight into our ingest streams; the real worker (`realtime process`)
  then writes history and publishes through realtime's fan-out manager;
- `http`: POST to our ingest API (the full pipeline);
- `pysio`: stock python-socketio `AsyncRedisManager(write_only=True).emit`, one emit per
  event, as a python-socketio worker process would;
- `publish`: PUBLISH the worker's own `update` messages (one per event) straight to the
  fan-out, on the topic's channel as the worker does, or (job `"channel": "common"`) on
  the one channel every instance listens on, as the worker did before interest-based
  fan-out: the web instances run the very same code for both.

Every event's data carries `t`, the publisher's wall clock in ms when it was made, so the
load generator measures delivery latency; `s` is the step it belongs to.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio

from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.core.settings import Settings
from realtime.core.topics import partition_of
from realtime.ingest.api import ingest_fields

TICK_S = 0.005


def now_ms() -> float:
    return time.time() * 1000.0


class Sender:
    def configure(self, job: dict[str, Any]) -> None:
        return None

    async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


class StreamSender(Sender):
    def __init__(self, redis_url: str) -> None:
        from realtime.core.connections import connect

        self.settings = Settings.from_env(redis_url=redis_url)
        self.keys = Keys(self.settings.prefix)
        self.redis = connect(self.settings)

    async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        now = int(now_ms())
        async with self.redis.pipeline(transaction=False) as pipe:
            for topic, data in batch:
                stream = self.keys.ingest(partition_of(topic, self.settings.partitions))
                fields = ingest_fields({"topic": topic, "data": data}, now)
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            await pipe.execute()

    async def close(self) -> None:
        await self.redis.aclose()


class HttpSender(Sender):
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/api/v1/events"
        self.session = aiohttp.ClientSession()

    async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        body = [{"topic": topic, "data": data} for topic, data in batch]
        async with self.session.post(self.url, data=jsoncodec.dumpb(body)) as response:
            if response.status != 202:
                raise RuntimeError(f"ingest answered {response.status}: {await response.text()}")

    async def close(self) -> None:
        await self.session.close()


class PysioSender(Sender):
    def __init__(self, redis_url: str) -> None:
        self.manager = socketio.AsyncRedisManager(redis_url, write_only=True)

    async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        for topic, data in batch:
            t = int(data["t"])
            event = {"topic": topic, "id": f"{t}-{data['seq']}", "ts": t, "data": data}
            await self.manager.emit("update", [event], room=topic, namespace="/")


class PublishSender(Sender):
    def __init__(self, redis_url: str) -> None:
        from realtime.core.connections import connect
        from realtime.core.wire import UpdateEncoder

        self.settings = Settings.from_env(redis_url=redis_url)
        self.fanout = UpdateEncoder.of(self.settings)
        self.redis = connect(self.settings)
        self.common: str | None = None

    def configure(self, job: dict[str, Any]) -> None:
        common = job.get("channel") == "common"
        self.common = Keys(self.settings.prefix).fanout_channel() if common else None

    async def send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        updates = []
        for topic, data in batch:
            t = int(data["t"])
            updates.append(
                (topic, [{"topic": topic, "id": f"{t}-{data['seq']}", "ts": t, "data": data}])
            )
        async with self.redis.pipeline(transaction=False) as pipe:
            for channel, message in self.fanout.encode_updates(updates):
                pipe.publish(self.common or channel, message)
            await pipe.execute()

    async def close(self) -> None:
        await self.redis.aclose()


async def run_job(sender: Sender, job: dict[str, Any]) -> dict[str, Any]:
    sender.configure(job)
    topics: list[str] = job["topics"]
    rate = float(job["rate"])
    count = int(job["count"])
    step = job.get("step", 0)
    pad = "x" * int(job.get("pad", 0))
    start = time.monotonic()
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - start) * rate) + 1)
        batch = []
        for seq in range(sent, due):
            topic = topics[seq % len(topics)]
            batch.append((topic, {"t": now_ms(), "seq": seq, "s": step, "pad": pad}))
        if batch:
            await sender.send(batch)
            sent = due
        if sent < count:
            await asyncio.sleep(TICK_S)
    return {"published": sent, "elapsed_s": time.monotonic() - start}


async def main(mode: str, redis_url: str, url: str) -> None:
    senders: dict[str, Callable[[], Sender]] = {
        "stream": lambda: StreamSender(redis_url),
        "http": lambda: HttpSender(url),
        "pysio": lambda: PysioSender(redis_url),
        "publish": lambda: PublishSender(redis_url),
    }
    sender = senders[mode]()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            if line.strip():
                result = await run_job(sender, jsoncodec.loads(line))
                sys.stdout.write(jsoncodec.dumps(result) + "\n")
                sys.stdout.flush()
    finally:
        await sender.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(*sys.argv[1:4]))
