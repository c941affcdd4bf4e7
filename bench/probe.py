"""The latency probe: a sample of the subscribers, in a process of its own, reading with
the kernel's receive timestamps (realtime.loadtest.stamped). Driven over stdin/stdout,
one JSON line per command, like the publisher (see `Probe`).

Why a process of its own: a timestamp is the arrival of the newest bytes a read
returns. The load generator serves ~1,000 sockets on one core; when it reaches a socket
late, that socket may hold two packets, which the kernel has merged, and the older
packet's events take the newer one's timestamp: a latency too high by up to the gap
between the two (a batch cycle, ~20 ms). Measured in the pipeline at 100 events/s, 4% of
the stamped reads held two frames, so they made its p99. This process does little but
read, so it reads its sockets as the packets come.

Commands and answers:
- {"connect": n}: n more stamped subscribers -> {"connected": ok, "failures": f,
  "connect_ms": [...]};
- {"step": s}: count events of step s from now on -> {};
- {"collect": expected, "wait_s": w}: wait until `expected` deliveries of the step have
  arrived (or none came for 0.5 s, or w s passed) -> {"delivered", "stale", "packets",
  "arrival_ms": [...], "to_ingest_ms": [...], "from_ingest_ms": [...]}.
"""

from __future__ import annotations

import asyncio
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.loadgen import Clients, Tally, open_clients
from bench.servers import Proc
from realtime.core import jsoncodec
from realtime.loadtest import wsclient


class Probe:
    """The bench's handle on a running probe process."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.clients = 0

    @classmethod
    async def start(
        cls, urls: Sequence[str], topic: str, deflate: bool, cpus: set[int], log_dir: Path
    ) -> Probe:
        args = [sys.executable, "-m", "bench.probe", topic, "deflate" if deflate else "plain"]
        proc = Proc("probe", [*args, *urls], cpus, log_dir, stdin_pipe=True)
        await proc.start()
        return cls(proc)

    async def connect(self, n: int) -> dict[str, Any]:
        answer = await self.proc.ask({"connect": n})
        self.clients += int(answer["connected"])
        return answer

    async def step(self, step: int) -> None:
        await self.proc.ask({"step": step})

    async def collect_into(self, tally: Tally, per_client: int, wait_s: float) -> None:
        """Wait for the probe's share of the step and add it to `tally`."""
        answer = await self.proc.ask({"collect": per_client * self.clients, "wait_s": wait_s})
        tally.delivered += answer["delivered"]
        tally.stale += answer["stale"]
        tally.packets += answer["packets"]
        tally.arrival_ms.extend(answer["arrival_ms"])
        for value in answer["to_ingest_ms"]:
            tally.to_ingest.record(value)
        for value in answer["from_ingest_ms"]:
            tally.from_ingest.record(value)

    async def stop(self) -> None:
        await self.proc.end()


class _Recording(Tally):
    """A Tally that also keeps the split at ingest as raw values, to hand back."""

    def reset(self, step: int) -> None:
        super().reset(step)
        self.to_ingest_ms: array[float] = array("d")
        self.from_ingest_ms: array[float] = array("d")

    def on_stamped_update(
        self, client: wsclient.SioWebSocket, events: list[Any], at_ms: float
    ) -> None:
        self._record(events, at_ms, self.arrival_ms)
        step = self.step
        for event in events:
            data = event["data"]
            if data["s"] == step:
                accepted = int(event["id"].partition("-")[0])
                self.to_ingest_ms.append(accepted - data["t"])
                self.from_ingest_ms.append(at_ms - accepted)


async def _collect(tally: _Recording, expected: int, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    last, last_change = tally.delivered, time.monotonic()
    while tally.delivered < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if tally.delivered != last:
            last, last_change = tally.delivered, time.monotonic()
        elif last and time.monotonic() - last_change > 0.5:
            break
    return {
        "delivered": tally.delivered,
        "stale": tally.stale,
        "packets": tally.packets,
        "arrival_ms": tally.arrival_ms.tolist(),
        "to_ingest_ms": tally.to_ingest_ms.tolist(),
        "from_ingest_ms": tally.from_ingest_ms.tolist(),
    }


async def main(topic: str, deflate: str, urls: list[str]) -> None:
    tally = _Recording()
    tally.reset(-1)
    opened: list[Clients] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = jsoncodec.loads(line)
            answer: dict[str, Any] = {}
            if "connect" in command:
                clients = await open_clients(
                    urls,
                    command["connect"],
                    lambda i: topic,
                    tally,
                    deflate=deflate == "deflate",
                    stamp_every=1,
                )
                opened.append(clients)
                answer = {
                    "connected": len(clients.clients),
                    "failures": clients.failures,
                    "connect_ms": clients.connect_ms,
                }
            elif "step" in command:
                tally.reset(command["step"])
            elif "collect" in command:
                answer = await _collect(tally, command["collect"], command["wait_s"])
            sys.stdout.write(jsoncodec.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        for clients in opened:
            clients.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
