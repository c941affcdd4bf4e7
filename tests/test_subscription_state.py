"""Unit tests: the per-connection subscription state (pure), including a property test
that replay and live delivery, interleaved any way they can be, give each event once;
and the rule for whether history still covers a position."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.core.streamids import parse_id
from realtime.delivery.conflate import Conflater
from realtime.delivery.history import Extent, covers
from realtime.delivery.subscriptions import Batch, Subscriptions, Target

pytestmark = pytest.mark.unit


def events(*ns: int, topic: str = "t") -> list[dict[str, Any]]:
    return [{"topic": topic, "id": f"{n}-0", "ts": n, "data": {}} for n in ns]


def batch(*ns: int) -> Batch:
    return Batch.of("t", events(*ns))


def ids(out: list[dict[str, Any]]) -> list[int]:
    return [int(e["id"].split("-")[0]) for e in out]


def live_subscription(subs: Subscriptions, last: int | None = None) -> int:
    generation = subs.begin("s", "t", None if last is None else (last, 0))
    assert subs.finish("s", "t", generation) == ([], True)
    return generation


def test_a_live_batch_that_is_all_new_is_passed_as_is() -> None:
    subs = Subscriptions()
    live_subscription(subs, last=2)
    new = batch(3, 4)
    assert subs.live("s", new) is new.events
    assert subs.last("s", "t") == (4, 0)


def test_live_drops_ids_already_sent() -> None:
    subs = Subscriptions()
    live_subscription(subs, last=2)
    assert ids(subs.live("s", batch(1, 2, 3))) == [3]
    assert subs.live("s", batch(3)) == []
    assert ids(subs.live("s", batch(2, 5))) == [5]


def test_ids_compare_as_numbers_not_strings() -> None:
    subs = Subscriptions()
    live_subscription(subs, last=9)
    assert ids(subs.live("s", batch(10))) == [10]


def test_backlog_buffers_live_batches_then_sends_what_the_replay_did_not() -> None:
    subs = Subscriptions()
    generation = subs.begin("s", "t", (2, 0))
    assert subs.live("s", batch(5, 6)) == []  # arrived during the replay
    assert ids(subs.replayed("s", generation, batch(3, 4, 5))) == [3, 4, 5]
    assert subs.live("s", batch(7)) == []
    out, done = subs.finish("s", "t", generation)
    assert (ids(out), done) == ([6, 7], True)
    assert ids(subs.live("s", batch(7, 8))) == [8]


def test_a_stale_buffer_makes_the_caller_read_history_again() -> None:
    subs = Subscriptions(buffer_limit=3)
    generation = subs.begin("s", "t", (0, 0))
    subs.live("s", batch(1, 2))
    subs.live("s", batch(3, 4))  # over the limit: dropped, it is all in history
    assert subs.live("s", batch(5)) == []
    assert ids(subs.replayed("s", generation, batch(1, 2))) == [1, 2]
    assert subs.finish("s", "t", generation) == ([], False)
    subs.live("s", batch(6))
    assert ids(subs.replayed("s", generation, batch(3, 4, 5, 6))) == [3, 4, 5, 6]
    assert subs.finish("s", "t", generation) == ([], True)
    assert subs.is_live("s", "t")


def test_a_newer_subscribe_wins_over_an_older_backlog() -> None:
    subs = Subscriptions()
    old = subs.begin("s", "t", (0, 0))
    new = subs.begin("s", "t", (5, 0))
    assert subs.replayed("s", old, batch(1, 2)) == []
    assert subs.finish("s", "t", old) == ([], True)
    assert not subs.is_live("s", "t")
    assert ids(subs.replayed("s", new, batch(6))) == [6]


def test_position_sets_where_a_subscription_starts() -> None:
    subs = Subscriptions()
    generation = subs.begin("s", "t", (9, 0))
    subs.position("s", "t", generation, (4, 0))  # a gap: from the newest event on
    subs.live("s", batch(4, 5))
    out, _ = subs.finish("s", "t", generation)
    assert ids(out) == [5]


def test_catch_up_puts_live_subscriptions_back_into_their_backlog() -> None:
    subs = Subscriptions()
    live_subscription(subs, last=3)
    generation = subs.begin("other", "t", (1, 0))  # still in its backlog
    subs.live("other", batch(2))
    no_position = subs.begin("live-only", "t", None)
    subs.finish("live-only", "t", no_position)

    targets = subs.begin_catch_up()

    [target] = targets["t"]
    assert (target.sid, target.last) == ("s", (3, 0))
    assert not subs.is_live("s", "t")
    # The one in its backlog must read history again: its buffer may miss events.
    assert subs.finish("other", "t", generation) == ([], False)
    assert subs.is_live("live-only", "t")
    assert isinstance(target, Target)


def test_ending_and_dropping() -> None:
    subs = Subscriptions()
    live_subscription(subs)
    subs.begin("s", "u", None)
    subs.end("s", "t")
    assert subs.live("s", batch(1)) == []
    assert subs.topics("s") == ["u"]
    assert list(subs.drop("s")) == ["u"]
    assert subs.count() == 0


@given(
    total=st.integers(1, 40),
    data=st.data(),
)
def test_replay_and_live_interleaved_give_each_event_once_in_order(
    total: int, data: st.DataObject
) -> None:
    """Events 1..total are published. The client resumes after `since`; it joined the
    room before event `first_live` was published, and history was read after event
    `read_at` was (so read_at >= first_live - 1). Live batches arrive in order, in any
    interleaving with the replay pages and the finish."""
    since = data.draw(st.integers(0, total))
    first_live = data.draw(st.integers(1, total + 1))
    read_at = data.draw(st.integers(max(since, first_live - 1), total))
    live_ids = list(range(first_live, total + 1))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(live_ids))), max_size=5)))
    chunks = [
        live_ids[a:b]
        for a, b in zip([0, *cuts], [*cuts, len(live_ids)], strict=True)
        if live_ids[a:b]
    ]
    page = data.draw(st.integers(1, 10))
    replay = list(range(since + 1, read_at + 1))
    pages = [replay[i : i + page] for i in range(0, len(replay), page)] or [[]]
    # Where the replay steps (pages, then finish) fall among the live batches.
    steps = len(pages) + 1
    positions = sorted(
        data.draw(st.lists(st.integers(0, len(chunks)), min_size=steps, max_size=steps))
    )

    subs = Subscriptions()
    generation = subs.begin("s", "t", (since, 0))
    sent: list[int] = []
    step = 0
    for index in range(len(chunks) + 1):
        while step < steps and positions[step] == index:
            if step < len(pages):
                sent += ids(subs.replayed("s", generation, batch(*pages[step])))
            else:
                out, done = subs.finish("s", "t", generation)
                assert done
                sent += ids(out)
            step += 1
        if index < len(chunks):
            sent += ids(subs.live("s", batch(*chunks[index])))

    assert sent == list(range(since + 1, total + 1))
    assert subs.last("s", "t") == (parse_id(f"{total}-0") if sent else (since, 0))


def test_history_covers_a_position_while_its_oldest_event_is_not_later() -> None:
    assert covers(Extent((5, 0), 10), (5, 0), maxlen=100)
    assert covers(Extent((5, 0), 10), (7, 3), maxlen=100)
    assert not covers(Extent((5, 0), 10), (4, 9), maxlen=100)
    assert not covers(Extent(None, 0), (4, 9), maxlen=100)  # gone: lost with Redis data


def test_0_0_is_covered_until_history_was_trimmed() -> None:
    assert covers(Extent(None, 0), (0, 0), maxlen=100)
    assert covers(Extent((5, 0), 99), (0, 0), maxlen=100)
    assert not covers(Extent((5, 0), 100), (0, 0), maxlen=100)


# -- batches joined within a tick; connections that fell behind -----------------------


def test_merged_batches_keep_id_order_and_leave_out_republished_events() -> None:
    merged = Batch.merged("t", events(1, 2, 3) + events(2, 3, 4) + events(5))
    assert ids(merged.events) == [1, 2, 3, 4, 5]
    assert merged.ids == [(n, 0) for n in (1, 2, 3, 4, 5)]


@given(
    parts=st.lists(
        st.tuples(st.lists(st.integers(1, 12), max_size=4), st.booleans()), min_size=1, max_size=5
    )
)
def test_fan_out_batches_joined_are_the_same_as_their_events_merged(
    parts: list[tuple[list[int], bool]],
) -> None:
    """Whether each part came as decoded events or as the JSON the worker published
    (passed through undecoded), joined they are what merging all their events gives."""
    batches = [
        Batch("t", None, batch(*ns).ids, orjson.dumps(events(*ns))) if as_json else batch(*ns)
        for ns, as_json in parts
    ]
    joined = Batch.joined("t", batches)
    merged = Batch.merged("t", [e for ns, _ in parts for e in events(*ns)])
    assert (joined.events, joined.ids) == (merged.events, merged.ids)
    if joined.json is not None:
        assert orjson.loads(joined.json) == merged.events


def test_a_suspended_connection_gets_nothing_then_catches_up_from_its_position() -> None:
    subs = Subscriptions()
    live_subscription(subs, last=2)
    assert ids(subs.live("s", batch(3))) == [3]
    assert subs.suspend("s") is True
    assert subs.suspend("s") is False  # already suspended: nothing to do again
    assert subs.live("s", batch(4, 5)) == []  # dropped: history has them
    assert not subs.all_live("s")
    targets = subs.resume("s")
    [target] = targets["t"]
    assert target.last == (3, 0)  # the last event it was actually sent
    assert ids(subs.replayed("s", target.generation, batch(3, 4, 5))) == [4, 5]
    assert ids(subs.live("s", batch(6))) == []  # buffered during the catch-up
    out, done = subs.finish("s", "t", target.generation)
    assert (ids(out), done) == ([6], True)
    assert subs.all_live("s")


def test_a_backlog_overtaken_by_a_suspension_is_abandoned() -> None:
    subs = Subscriptions()
    generation = subs.begin("s", "t", (1, 0))
    subs.suspend("s")
    assert subs.replayed("s", generation, batch(2, 3)) == []
    assert subs.finish("s", "t", generation) == ([], True)  # that backlog is over
    [target] = subs.resume("s")["t"]
    assert target.last == (1, 0)


def test_a_live_only_subscription_just_goes_live_again_after_a_suspension() -> None:
    subs = Subscriptions()
    live_subscription(subs, last=None)
    subs.suspend("s")
    assert subs.resume("s") == {}
    assert subs.all_live("s")
    assert ids(subs.live("s", batch(7))) == [7]


def test_members_count_connections_per_topic_across_joins_leaves_and_drops() -> None:
    subs = Subscriptions()
    for n in range(50):
        subs.begin(f"s{n}", "t", None)
        subs.begin(f"s{n}", f"own{n}", None)
    subs.begin("s0", "t", None)  # a resubscribe replaces, it does not count twice
    assert subs.members("t") == 50
    for n in range(0, 50, 2):
        subs.end(f"s{n}", "t")
    subs.end("s0", "t")  # ending what is gone changes nothing
    assert subs.members("t") == 25
    for n in range(1, 50, 2):
        assert sorted(subs.drop(f"s{n}")) == sorted(["t", f"own{n}"])
    assert subs.members("t") == 0
    assert subs.members("own0") == 1
    subs.begin_catch_up()  # puts cursors back into backlog: membership is unchanged
    assert subs.members("own0") == 1
    assert subs.drop("s0") == ["own0"]
    assert subs.members("own0") == 0


def test_a_max_rate_conflater_stays_with_its_subscription_until_it_ends() -> None:
    subs = Subscriptions()
    conflater = Conflater("t", 2.0)
    subs.begin("s", "t", (1, 0), conflater)
    subs.begin("other", "t", None)
    assert subs.conflater("s", "t") is conflater
    assert subs.conflater("other", "t") is None
    subs.suspend("s")  # a slow connection: the pending merge must not be lost
    assert subs.conflater("s", "t") is conflater
    subs.resume("s")
    assert subs.conflater("s", "t") is conflater
    subs.begin_catch_up()
    assert subs.conflater("s", "t") is conflater
    subs.begin("s", "t", None)  # subscribed again without max_rate
    assert subs.conflater("s", "t") is None
    subs.begin("s", "t", None, conflater)
    subs.drop("s")
    assert subs.conflater("s", "t") is None
    assert subs._conflated == {}  # the per-topic count is back to nothing
