"""Unit tests: presence bookkeeping (realtime/delivery/presence_counts.py), no I/O."""

from __future__ import annotations

import pytest

from realtime.delivery.presence_counts import (
    LocalMembers,
    LocalViewers,
    Throttle,
    merge_members,
    parse_fields,
    total,
)

pytestmark = pytest.mark.unit


def test_local_viewers_record_changes_and_the_total() -> None:
    local = LocalViewers()
    assert local.set("a", 3)
    assert local.set("b", 1)
    assert not local.set("a", 3)  # unchanged: nothing to write
    assert local.total() == 4
    assert local.take() == {"a": 3, "b": 1}
    assert local.take() == {}  # taken once
    local.set("a", 0)
    assert local.get("a") == 0
    assert local.total() == 1
    assert local.take() == {"a": 0}  # 0: the field is removed


def test_a_failed_flush_is_written_with_the_next_one_at_its_count_then() -> None:
    local = LocalViewers()
    local.set("a", 2)
    taken = local.take()
    local.set("a", 5)
    local.restore(taken)
    assert local.take() == {"a": 5}


def test_mark_all_rewrites_every_topic() -> None:
    local = LocalViewers()
    local.set("a", 2)
    local.set("b", 1)
    local.take()
    local.mark_all()
    assert local.take() == {"a": 2, "b": 1}


def test_the_total_counts_live_instances_only_and_replaces_our_own_field() -> None:
    fields = {"i1": 5, "i2": 7, "dead": 100, "me": 3}
    assert total(fields, {"i1", "i2", "me"}) == 15
    assert total(fields, {"i1", "i2", "me"}, me="me", local=4) == 16
    assert total({}, set(), me="me", local=2) == 2


def test_fields_as_redis_returns_them() -> None:
    raw = {b"i1": b"5", b"i2": b"0", b"bad": b"x", "i3": "2"}
    assert parse_fields(raw) == {"i1": 5, "i3": 2}


def test_the_throttle_lets_one_event_per_interval_through() -> None:
    throttle = Throttle(1.0)
    throttle.touch("a", 10.0)
    assert throttle.pop_due(10.0) == ["a"]  # after a quiet interval: at once
    for now in (10.1, 10.5, 10.9):
        throttle.touch("a", now)
        assert throttle.pop_due(now) == []  # coalesced
    assert throttle.pending() == 1
    assert throttle.pop_due(11.0) == ["a"]  # one, at the end of the interval
    assert throttle.pop_due(12.0) == []


def test_the_throttle_keeps_topics_apart_and_forgets() -> None:
    throttle = Throttle(1.0)
    throttle.touch("a", 0.0)
    throttle.touch("b", 0.0)
    assert sorted(throttle.pop_due(0.0)) == ["a", "b"]
    throttle.touch("a", 0.5)
    throttle.forget("a")
    assert throttle.pending() == 0
    throttle.touch("a", 0.6)
    assert throttle.pop_due(0.6) == ["a"]  # forgotten: no interval to wait out


def test_expired_emission_times_are_dropped() -> None:
    throttle = Throttle(1.0)
    throttle.touch("a", 0.0)
    throttle.pop_due(0.0)
    throttle.expire(0.5)
    throttle.touch("a", 0.5)
    assert throttle.pop_due(0.5) == []  # still held back
    throttle.pop_due(1.0)
    throttle.expire(5.0)
    throttle.touch("a", 5.0)
    assert throttle.pop_due(5.0) == ["a"]


def test_local_members_count_each_sub_and_record_changes() -> None:
    members = LocalMembers()
    members.add("a", "alice", 1)
    members.add("a", "alice", 1)
    members.add("a", "bob", 1)
    assert members.of("a") == {"alice": 2, "bob": 1}
    assert members.take() == {("a", "alice"): 2, ("a", "bob"): 1}
    members.add("a", "bob", -1)
    assert members.of("a") == {"alice": 2}
    assert members.take() == {("a", "bob"): 0}  # 0: the field is removed
    members.add("a", "alice", -2)
    assert members.of("a") == {}
    assert members.counts == {}  # nothing kept for a topic without members
    members.add("b", "carol", 1)
    members.take()
    members.mark_all()
    assert members.take() == {("b", "carol"): 1}


def test_member_lists_merge_sorted_and_capped() -> None:
    parts = [{"bob": 1, "alice": 2}, {"alice": 1, "dave": 0}, {"carol": 3}]
    assert merge_members(parts, 10) == (["alice", "bob", "carol"], False)
    assert merge_members(parts, 2) == (["alice", "bob"], True)
    assert merge_members([], 5) == ([], False)
