"""Delivery's parts without a server: pacing (max_rate), slow-client handling and the
catch-up from history, each with a recording connection and an in-memory history."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.core.keys import SLOW_CLIENT
from realtime.core.metrics import WebMetrics
from realtime.core.streamids import ZERO, StreamId, parse_id
from realtime.delivery.catch_up import PAGE, CatchUp, Page
from realtime.delivery.conflate import Conflater
from realtime.delivery.history import Extent, WireEvent
from realtime.delivery.pacing import Pacer
from realtime.delivery.slow_clients import SlowClients
from realtime.delivery.subscriptions import Batch, Subscriptions, Target
from realtime.transport.frames import Frame
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.unit

TOPIC = "metrics.cpu"


def event(n: int, value: float = 1.0) -> WireEvent:
    return {"topic": TOPIC, "id": f"{n}-0", "ts": n, "data": {"value": value}}


class Connection:
    """What delivery may do with a connection (`realtime.transport.writer.Writer`),
    recorded."""

    def __init__(self, *, full: bool = False) -> None:
        self.frames: list[Frame] = []
        self.full = full
        self.on_drained: Callable[[], None] | None = None
        self.abandoned: list[Frame] | None = None

    def push(self, frame: Frame) -> None:
        self.frames.append(frame)

    def direct(self) -> asyncio.Transport | None:
        return None

    def backlog_full(self) -> bool:
        return self.full

    def notify_drained(self, callback: Callable[[], None]) -> None:
        self.on_drained = callback

    def abandon(self, last: list[Frame]) -> None:
        self.abandoned = last

    def updates(self) -> list[list[str]]:
        """The event ids of each `update` pushed."""
        out = []
        for frame in self.frames:
            name, events = orjson.loads(frame.message[2:])
            assert name == "update"
            out.append([e["id"] for e in events])
        return out


# -- pacing -------------------------------------------------------------------------------


async def test_a_paced_subscription_gets_the_first_event_then_the_merge_on_its_timer() -> None:
    subs = Subscriptions()
    conflater = Conflater(TOPIC, max_rate=20)  # one update per 50 ms
    subs.begin("s", TOPIC, None, conflater)
    connection = Connection()
    pacer = Pacer(subs, lambda sid: connection, lambda writer, frame: writer.push(frame))
    now = pacer.pace("s", conflater, [event(1), event(2), event(3)])
    assert [e["id"] for e in now] == ["1-0"]  # leading edge
    assert connection.frames == []  # the rest waits for the timer
    await eventually(lambda: connection.frames, "the paced merge", timeout=2)
    assert connection.updates() == [["3-0"]]  # merged: the latest per topic
    pacer.close()


async def test_a_paced_merge_is_dropped_when_the_subscription_ended() -> None:
    subs = Subscriptions()
    conflater = Conflater(TOPIC, max_rate=20)
    subs.begin("s", TOPIC, None, conflater)
    connection = Connection()
    pacer = Pacer(subs, lambda sid: connection, lambda writer, frame: writer.push(frame))
    pacer.pace("s", conflater, [event(1), event(2)])
    pacer.cancel("s", TOPIC)
    subs.end("s", TOPIC)
    assert not pacer._timers
    await asyncio.sleep(0.1)  # the merge's due time has passed: nothing was sent
    assert connection.frames == []


# -- slow clients -------------------------------------------------------------------------


def slow_clients(
    subs: Subscriptions, connection: Connection, slow_client_s: float = 30.0
) -> tuple[SlowClients, list[dict[str, list[Target]]], list[str], WebMetrics]:
    resumed: list[dict[str, list[Target]]] = []
    dropped: list[str] = []
    metrics = WebMetrics()
    slow = SlowClients(
        subs,
        lambda sid: connection,
        metrics,
        slow_client_s=slow_client_s,
        resumed=resumed.append,
        drop=dropped.append,
    )
    return slow, resumed, dropped, metrics


def live_subscription(subs: Subscriptions, sid: str = "s") -> None:
    generation = subs.begin(sid, TOPIC, None)
    subs.position(sid, TOPIC, generation, ZERO)
    subs.finish(sid, TOPIC, generation)


async def test_a_client_that_fell_behind_is_held_back_then_caught_up_once_drained() -> None:
    subs = Subscriptions()
    live_subscription(subs)
    connection = Connection(full=True)
    slow, resumed, dropped, _ = slow_clients(subs, connection)
    slow.fell_behind("s", connection)
    assert slow.is_behind("s")
    assert not subs.all_live("s")  # suspended: only its position is kept
    assert subs.live("s", Batch.of(TOPIC, [event(1)])) == []
    assert connection.on_drained is not None
    connection.on_drained()
    (targets,) = resumed
    assert [t.sid for t in targets[TOPIC]] == ["s"]  # to be caught up from history
    assert slow.is_behind("s")  # until the catch-up made it live
    generation = targets[TOPIC][0].generation
    subs.finish("s", TOPIC, generation)
    slow.check_caught_up("s")
    assert not slow.is_behind("s")
    assert dropped == []
    slow.close()


async def test_a_client_behind_for_too_long_is_told_why_and_cut_off() -> None:
    subs = Subscriptions()
    live_subscription(subs)
    connection = Connection(full=True)
    slow, _, dropped, metrics = slow_clients(subs, connection, slow_client_s=0.05)
    slow.fell_behind("s", connection)
    await eventually(lambda: connection.abandoned is not None, "the disconnect", timeout=2)
    assert dropped == ["s"]
    assert connection.abandoned is not None
    closing, disconnect = connection.abandoned
    name, reason = orjson.loads(closing.message[2:])
    assert (name, reason["code"]) == ("closing", SLOW_CLIENT)
    assert disconnect.message == b"41"
    assert metrics.registry.get_sample_value(
        "realtime_disconnects_total", {"reason": "slow_client"}
    )


async def test_a_gone_client_is_forgotten() -> None:
    subs = Subscriptions()
    live_subscription(subs)
    connection = Connection(full=True)
    slow, _, dropped, _ = slow_clients(subs, connection, slow_client_s=0.05)
    slow.fell_behind("s", connection)
    slow.forget("s")
    await asyncio.sleep(0.1)  # its disconnect timer would have fired by now
    assert not slow.is_behind("s")
    assert dropped == []
    assert connection.abandoned is None


# -- catch-up -----------------------------------------------------------------------------


class History:
    """A topic's history in memory, as `HistoryReader` answers."""

    maxlen = 10_000

    def __init__(self, events: list[WireEvent], *, failures: int = 0) -> None:
        self.events = events
        self.failures = failures

    async def extent(self, topic: str) -> Extent:
        return Extent(parse_id(self.events[0]["id"]) if self.events else None, len(self.events))

    async def after(self, topic: str, after: StreamId, count: int) -> list[WireEvent]:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Redis is down")
        return [e for e in self.events if parse_id(e["id"]) > after][:count]


def catch_up(
    history: History, subs: Subscriptions
) -> tuple[CatchUp, dict[str, list[str]], list[str], list[str], WebMetrics]:
    sent: dict[str, list[str]] = {}
    disconnected: list[str] = []
    caught_up: list[str] = []
    metrics = WebMetrics()

    def send(sid: str, topic: str, events: list[WireEvent], page: Page | None) -> None:
        sent.setdefault(sid, []).extend(e["id"] for e in events)

    async def disconnect(sid: str) -> None:
        disconnected.append(sid)

    part = CatchUp(
        history,  # type: ignore[arg-type]
        subs,
        metrics,
        send=send,
        disconnect=disconnect,
        caught_up=caught_up.append,
    )
    return part, sent, disconnected, caught_up, metrics


async def test_a_backlog_replays_history_in_pages_then_what_arrived_live_meanwhile() -> None:
    total = PAGE + 20
    subs = Subscriptions()
    generation = subs.begin("s", TOPIC, (0, 0))
    history = History([event(n) for n in range(1, total + 1)])
    part, sent, _, _, _ = catch_up(history, subs)
    # live events buffered during the replay: one already in history, one newer
    subs.live("s", Batch.of(TOPIC, [event(total), event(total + 1)]))
    await part.backlog(TOPIC, [Target("s", generation, (0, 0))], None)
    assert sent["s"] == [f"{n}-0" for n in range(1, total + 2)]  # once each, in order
    assert subs.is_live("s", TOPIC)


async def test_a_catch_up_drops_the_connection_whose_gap_history_no_longer_holds() -> None:
    subs = Subscriptions()
    for sid in ("kept", "lost"):
        live_subscription(subs, sid)
    targets = subs.begin_catch_up()[TOPIC]
    for target in targets:
        subs.position(target.sid, TOPIC, target.generation, (5 if target.sid == "kept" else 1, 0))
    history = History([event(n) for n in range(5, 9)])  # 1-0 .. 4-0 were trimmed
    part, sent, disconnected, caught_up, metrics = catch_up(history, subs)
    ordered = [Target(t.sid, t.generation, subs.last(t.sid, TOPIC)) for t in targets]
    await part.catch_up(TOPIC, ordered)
    assert disconnected == ["lost"]
    assert sent == {"kept": ["6-0", "7-0", "8-0"]}
    assert caught_up == ["kept"]
    assert metrics.registry.get_sample_value("realtime_disconnects_total", {"reason": "gap"})


async def test_history_reads_are_retried_until_redis_answers() -> None:
    history = History([event(1)], failures=2)
    part, *_ = catch_up(history, Subscriptions())
    got: Any = await part.retrying(lambda: history.after(TOPIC, ZERO, 10))
    assert [e["id"] for e in got] == ["1-0"]
