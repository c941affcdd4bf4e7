"""Live delivery on a web instance: at most one `update` packet per topic per batch
tick (the first after a quiet tick at once), batches handed out in slices with the
event loop's other work in between, and through all of it every connection gets each
event once, in order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from realtime.core.keys import NAMESPACE
from realtime.core.settings import Settings
from realtime.delivery import hub as delivery_module
from realtime.loadtest import wsclient
from realtime.web.app import DELIVERY, SIO
from tests.helpers.inprocess import serving

pytestmark = pytest.mark.integration

TOPIC = "batch.t"
WARM_UP = "0-1"  # an event before the others, so the subscriptions are live (see below)


def events(*ns: int) -> list[dict[str, Any]]:
    return [{"topic": TOPIC, "id": f"{n}-0", "ts": n, "data": {"n": n}} for n in ns]


class Packets:
    """The `update` packets each client got: (arrival time, [event ids])."""

    def __init__(self) -> None:
        self.by_client: dict[int, list[tuple[float, list[str]]]] = {}

    def on_update(self, client: Any, got: list[Any], at_ms: float) -> None:
        ids = [e["id"] for e in got if e["id"] != WARM_UP]
        if ids:
            self.by_client.setdefault(id(client), []).append((time.monotonic(), ids))

    def ids(self, client: Any) -> list[str]:
        return [i for _, ids in self.by_client.get(id(client), []) for i in ids]

    async def wait_for(self, client: Any, count: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.ids(client)) < count:
            assert time.monotonic() < deadline, f"got {self.ids(client)}, wanted {count} ids"
            await asyncio.sleep(0.01)


async def subscribed(url: str, packets: Packets, count: int) -> list[wsclient.SioWebSocket]:
    clients = []
    for _ in range(count):
        client = await wsclient.connect(url, deflate=False, on_update=packets.on_update)
        ack = await client.call("subscribe", {"topic": TOPIC})
        assert ack["ok"], ack
        clients.append(client)
    return clients


async def live(app: Any, clients: list[wsclient.SioWebSocket]) -> None:
    """Wait until the subscriptions are live: until then (their backlog phase, while
    history is read) live events are held and sent together when it ends."""
    seen: set[int] = set()

    def on_update(client: Any, got: list[Any], at_ms: float) -> None:
        if any(e["id"] == WARM_UP for e in got):
            seen.add(id(client))

    handlers = [c.on_update for c in clients]
    for client in clients:
        client.on_update = on_update
    await app[DELIVERY].live(TOPIC, [{"topic": TOPIC, "id": WARM_UP, "ts": 0, "data": {}}])
    deadline = time.monotonic() + 10
    while len(seen) < len(clients):
        assert time.monotonic() < deadline, f"{len(seen)} of {len(clients)} live"
        await asyncio.sleep(0.01)
    for client, handler in zip(clients, handlers, strict=True):
        client.on_update = handler


async def test_the_first_event_after_a_quiet_tick_goes_at_once_the_next_ones_together(
    settings: Settings,
) -> None:
    tick_s = 1.0
    packets = Packets()
    async with serving(settings.with_overrides(batch_tick_ms=tick_s * 1000)) as (url, app):
        (client,) = await subscribed(url, packets, 1)
        await live(app, [client])
        await asyncio.sleep(tick_s)  # a quiet tick
        delivery = app[DELIVERY]
        started = time.monotonic()
        await delivery.live(TOPIC, events(1))
        await packets.wait_for(client, 1)
        first_at = packets.by_client[id(client)][0][0]
        assert first_at - started < tick_s / 2  # not held for the tick
        for n in (2, 3, 4):
            await delivery.live(TOPIC, events(n))
        await packets.wait_for(client, 4)
        (_, first), (second_at, rest) = packets.by_client[id(client)]
        assert (first, rest) == (["1-0"], ["2-0", "3-0", "4-0"])  # one packet for the three
        assert second_at - first_at >= tick_s * 0.9  # they waited for the end of the tick
        client.abort()


async def test_after_a_hand_out_as_long_as_a_tick_the_next_event_goes_at_once(
    settings: Settings,
) -> None:
    """A big room's hand-out takes about a tick (a send to each of 1,000 connections):
    it counts as the tick, so the next event is not held for another one; but under
    load (one arrived while it was handed out, or it merged several fan-out messages)
    the next waits a tick after it, to go out with whatever else comes. The hand-out
    is made as long as a tick here by a slow recovery-log write, which it waits for."""
    tick_s = 0.5
    packets = Packets()
    async with serving(settings.with_overrides(batch_tick_ms=tick_s * 1000)) as (url, app):
        (client,) = await subscribed(url, packets, 1)
        await live(app, [client])
        delivery = app[DELIVERY]
        written = delivery.log_written
        assert written is not None  # recovery is on: the hand-out waits for the log

        began = asyncio.Event()

        async def slow() -> None:
            began.set()
            await asyncio.sleep(tick_s)
            await written()

        async def long_hand_out(n: int) -> None:
            await asyncio.sleep(tick_s)  # a quiet tick
            delivery.log_written = slow
            began.clear()
            await delivery.live(TOPIC, events(n))
            await began.wait()

        await long_hand_out(1)
        sender = delivery._sender
        assert sender is not None
        await sender
        delivery.log_written = written
        started = time.monotonic()
        await delivery.live(TOPIC, events(2))
        await packets.wait_for(client, 2)
        assert packets.by_client[id(client)][1][0] - started < tick_s / 2  # at once

        await long_hand_out(3)
        await delivery.live(TOPIC, events(4))  # while 3 is being handed out
        delivery.log_written = written
        await packets.wait_for(client, 4)
        got = packets.by_client[id(client)]
        assert [ids for _, ids in got] == [["1-0"], ["2-0"], ["3-0"], ["4-0"]]
        assert got[3][0] - got[2][0] >= tick_s * 0.9  # a tick after the hand-out of 3

        # A batch that merged several fan-out messages is a sign of load too: the next
        # event waits a tick after its hand-out (more may be on their way).
        await asyncio.sleep(tick_s)
        delivery.log_written = slow
        began.clear()
        delivery.offer(TOPIC, events(5))
        delivery.offer(TOPIC, events(6))  # before the hand-out starts: merged with 5
        await began.wait()
        sender = delivery._sender
        assert sender is not None
        await sender
        delivery.log_written = written
        await delivery.live(TOPIC, events(7))
        await packets.wait_for(client, 7)
        got = packets.by_client[id(client)]
        assert [ids for _, ids in got[4:]] == [["5-0", "6-0"], ["7-0"]]
        assert got[5][0] - got[4][0] >= tick_s * 0.9
        client.abort()


async def test_without_a_tick_each_fan_out_message_is_its_own_packet(settings: Settings) -> None:
    packets = Packets()
    async with serving(settings.with_overrides(batch_tick_ms=0)) as (url, app):
        (client,) = await subscribed(url, packets, 1)
        await live(app, [client])
        for n in range(1, 21):
            await app[DELIVERY].live(TOPIC, events(n))
        await packets.wait_for(client, 20)
        assert [ids for _, ids in packets.by_client[id(client)]] == [
            [f"{n}-0"] for n in range(1, 21)
        ]
        client.abort()


@pytest.mark.parametrize("tick_ms", [0, 5])
async def test_slices_let_the_loop_run_and_every_client_gets_every_event_once_in_order(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tick_ms: int
) -> None:
    monkeypatch.setattr(delivery_module, "SLICE", 7)  # 40 clients: 6 slices per batch
    packets = Packets()
    async with serving(settings.with_overrides(batch_tick_ms=tick_ms)) as (url, app):
        clients = await subscribed(url, packets, 40)
        await live(app, clients)
        delivery = app[DELIVERY]
        spins = 0

        async def spin() -> None:  # counts the event loop's turns
            nonlocal spins
            while True:
                spins += 1
                await asyncio.sleep(0)

        spinner = asyncio.create_task(spin())
        await asyncio.sleep(0)
        await delivery.live(TOPIC, events(1))
        sender = delivery._sender  # the task handing the batch out
        assert sender is not None
        before = spins
        await sender
        # The batch went out in 6 slices: the loop served the spinner in between.
        assert spins - before >= 5
        await packets.wait_for(clients[-1], 1)

        # Meanwhile: a newcomer subscribes, one client leaves, one disconnects.
        late: list[wsclient.SioWebSocket] = []

        async def newcomer() -> None:
            late.extend(await subscribed(url, packets, 1))

        joining = asyncio.create_task(newcomer())
        leaver, dropped = clients[3], clients[10]
        for n in range(2, 101):
            await delivery.live(TOPIC, events(n))
            if n == 30:
                await leaver.call("unsubscribe", {"topic": TOPIC})
            if n == 50:
                dropped.abort()
            if n % 10 == 0:
                await asyncio.sleep(0.005)
        await joining
        staying = [c for c in clients if c not in (leaver, dropped)]
        for client in staying:
            await packets.wait_for(client, 100)
            assert packets.ids(client) == [f"{n}-0" for n in range(1, 101)]
        left = packets.ids(leaver)  # what was handed out before it left: a prefix
        assert 1 <= len(left) <= 30
        assert left == [f"{n}-0" for n in range(1, len(left) + 1)]
        got = packets.ids(late[0])
        assert got == sorted(set(got), key=lambda i: int(i.split("-")[0]))  # in order, once
        assert not got or got[-1] == "100-0"
        spinner.cancel()
        for client in [*staying, *late]:
            client.abort()


async def test_joins_and_leaves_are_seen_between_batches_and_between_slices(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fan-out keeps each topic's members from one batch to the next: a client that
    joins is in the next batch, and one that leaves in the middle of a hand-out gets
    nothing after it left."""
    monkeypatch.setattr(delivery_module, "SLICE", 2)
    packets = Packets()
    async with serving(settings.with_overrides(batch_tick_ms=0)) as (url, app):
        clients = await subscribed(url, packets, 6)
        await live(app, clients)
        delivery = app[DELIVERY]
        await delivery.live(TOPIC, events(1))
        for client in clients:
            await packets.wait_for(client, 1)
        newcomer = (await subscribed(url, packets, 1))[0]
        await live(app, [newcomer])  # reached the newcomer: it is a member now
        await delivery.live(TOPIC, events(2))
        for client in [*clients, newcomer]:
            await packets.wait_for(client, 1 if client is newcomer else 2)
        # The newcomer is handed out to last; it leaves once the first slice is out.
        *_, (last_sid, _) = app[SIO].manager.get_participants(NAMESPACE, TOPIC)
        await delivery.live(TOPIC, events(3))
        sender = delivery._sender
        assert sender is not None
        await asyncio.sleep(0)  # the sender hands out its first slice, then yields
        assert not sender.done()
        await delivery.unsubscribe(last_sid, TOPIC)
        await sender
        for client in clients:
            await packets.wait_for(client, 3)
            assert packets.ids(client) == ["1-0", "2-0", "3-0"]
        await asyncio.sleep(0.1)
        assert packets.ids(newcomer) == ["2-0"]
        for client in [*clients, newcomer]:
            client.abort()
