"""One SSE reader's state (no I/O): the seam between backlog and live, the position in
every `id:`, the bound on unsent bytes and on events held during a replay."""

from __future__ import annotations

import asyncio
import json

import pytest

from realtime.core import sse
from realtime.core.streamids import parse_id as sse_id
from realtime.delivery.streams import HELD_LIMIT, SLOW, LiveBatch, StreamReader

pytestmark = pytest.mark.unit


def event(topic: str, ms: int) -> dict[str, object]:
    return {"topic": topic, "id": f"{ms}-0", "ts": ms, "data": {}}


def updates(data: bytes) -> list[tuple[str, str]]:
    """(id of the event, id: line) of each update message."""
    out = []
    for raw in data.split(b"\n\n"):
        lines = dict(line.split(": ", 1) for line in raw.decode().splitlines())
        if lines.get("event") == "update":
            out.append((lines["data"].split('"id":"')[1].split('"')[0], lines["id"]))
    return out


def test_live_events_held_during_the_backlog_go_out_after_it_less_duplicates() -> None:
    reader = StreamReader(1 << 20)
    reader.cursors = {"a": (1, 0), "b": (0, 0)}
    reader.hold("a")
    reader.offer("a", [event("a", 3), event("a", 4)])  # live, while history is read
    reader.offer("b", [event("b", 7)])  # not held: goes out at once
    reader.send("a", [event("a", 2), event("a", 3)], backlog=True)  # history's page
    reader.release("a")
    reader.offer("a", [event("a", 4), event("a", 5)])
    assert updates(reader.take()) == [
        ("7-0", "a=1-0,b=7-0"),
        ("2-0", "a=2-0,b=7-0"),
        ("3-0", "a=3-0,b=7-0"),
        ("4-0", "a=4-0,b=7-0"),
        ("5-0", "a=5-0,b=7-0"),
    ]


def test_a_live_batch_shared_by_readers_gives_each_the_messages_one_by_one_would() -> None:
    """The live path makes each batch's `data:` lines once for every reader; each
    reader's bytes must still be exactly `sse.message` per event with its own position
    (topics before and after the batch's, the seam's duplicates left out)."""
    batch = LiveBatch.of(
        [event("m", n) for n in (4, 5, 6)] + [event("m", 7) | {"data": {"x": "\n"}}]
    )
    starts = [{"m": (0, 0)}, {"a": (9, 1), "m": (5, 0), "z": (2, 0)}, {"m": (7, 0), "b": (1, 0)}]
    for cursors in starts:
        reader = StreamReader(1 << 20)
        reader.cursors = dict(cursors)
        reader.offer("m", batch)
        want, position = [], dict(cursors)
        for sent in batch.events:
            if sse_id(sent["id"]) > position["m"]:
                position["m"] = sse_id(sent["id"])
                want.append(sse.message(sse.UPDATE, sent, sse.encode_position(position)))
        assert reader.take() == b"".join(want)
        assert reader.cursors == position


def test_a_reader_past_its_bound_is_cut_and_holds_nothing() -> None:
    reader = StreamReader(2048)
    reader.cursors = {"a": (0, 0)}
    reader.offer("a", [event("a", n) for n in range(1, 100)])
    assert reader.cut == SLOW
    assert reader.take() == b""
    reader.offer("a", [event("a", 200)])
    assert reader.take() == b""


def test_a_backlog_page_is_queued_past_the_bound() -> None:
    reader = StreamReader(2048)
    reader.cursors = {"a": (0, 0)}
    reader.hold("a")
    reader.send("a", [event("a", n) for n in range(1, 100)], backlog=True)
    assert reader.cut is None
    assert len(updates(reader.take())) == 99


def test_too_many_held_events_are_dropped_to_be_read_from_history_again() -> None:
    reader = StreamReader(1 << 30)
    reader.cursors = {"a": (0, 0)}
    reader.hold("a")
    reader.offer("a", [event("a", n) for n in range(1, HELD_LIMIT + 2)])
    assert "a" in reader.stale
    reader.offer("a", [event("a", HELD_LIMIT + 5)])
    reader.release("a")
    assert reader.take() == b""  # nothing held: StreamReaders reads history again


def test_a_gap_names_the_topic_and_where_it_goes_on() -> None:
    reader = StreamReader(1 << 20)
    reader.cursors = {"a": (5, 0)}
    reader.gap("b", (2, 0), (9, 0))
    assert reader.take() == sse.message(
        sse.GAP, {"topic": "b", "since": "2-0", "resumed_after": "9-0"}, "a=5-0,b=9-0"
    )


async def test_with_max_rate_a_topic_is_merged_and_its_position_waits_for_the_merge() -> None:
    reader = StreamReader(1 << 20, max_rate=100)
    reader.cursors = {"a": (0, 0), "b": (0, 0)}
    reader.send("a", [event("a", n) for n in range(1, 6)])
    reader.send("a", [event("a", 5)])  # a duplicate at the seam, while merged: nothing
    # The first event goes out at once; the other four wait for the interval, and the
    # position (every `id:`) stays before them until they are sent.
    assert updates(reader.take()) == [("1-0", "a=1-0,b=0-0")]
    reader.send("b", [event("b", 9)], whole=True)  # a snapshot: not merged
    assert updates(reader.take()) == [("9-0", "a=1-0,b=9-0")]
    await asyncio.wait_for(reader.wake.wait(), 5)  # the timer sends the merge
    data = reader.take()
    assert updates(data) == [("5-0", "a=5-0,b=9-0")]
    merged = json.loads(data.split(b"data: ")[1].split(b"\n")[0])
    assert (merged["data"]["count"], merged["data"]["first_id"]) == (4, "2-0")
    reader.send("a", [event("a", 6), event("a", 7)])  # 7 waits for a timer
    assert reader._pacing is not None
    assert reader._pacing._timers
    reader.end(SLOW)  # an ended reader's timers stop: nothing more is queued
    assert not reader._pacing._timers
    assert reader.take() == b""
