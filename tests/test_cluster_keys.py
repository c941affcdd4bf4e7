"""Cluster-mode key layout (pure): every key of a partition in one hash slot, the
partitions spread evenly over the slot space, single-node names unchanged; and how a
commit plan is split between the partition's slot and the others."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from processors.worker.fencing import CommitPlan, HistoryWrite
from processors.worker.slots import slot_of, split
from realtime.core.keys import Keys, partition_tag
from realtime.core.settings import Settings, SettingsError
from realtime.core.topics import TOPIC_PATTERN, partition_of

pytestmark = pytest.mark.unit

topics = st.from_regex(TOPIC_PATTERN, fullmatch=True)


def test_single_node_names_are_unchanged() -> None:
    keys = Keys("rt:")
    assert [keys.ingest(3), keys.topic("a.b"), keys.lease(3), keys.windows(3)] == [
        "rt:ingest:3", "rt:topic:a.b", "rt:lease:3", "rt:windows:3",
    ]  # fmt: skip
    assert [keys.dead_letters(), keys.idempotency("a.b", "k"), keys.fanout_channel()] == [
        "rt:dead", "rt:idempotency:3:a.b:k", "rt:fanout",
    ]  # fmt: skip
    assert keys.legacy_idempotency("a.b", "k") == "rt:idem:a.b:k"
    assert keys.dead_letter_streams() == ["rt:dead"]


@given(topic=topics, key=st.text(min_size=1, max_size=20), partitions=st.integers(1, 64))
def test_everything_of_a_topics_partition_shares_its_slot(
    topic: str, key: str, partitions: int
) -> None:
    keys = Keys("rt:", cluster=True, partitions=partitions)
    p = partition_of(topic, partitions)
    names = [
        keys.ingest(p), keys.lease(p), keys.windows(p), keys.dead_letters(p),
        keys.topic(topic), keys.idempotency(topic, key), keys.topic_channel(topic),
        keys.legacy_idempotency(topic, key), keys.attempts(p),
    ]  # fmt: skip
    assert len({slot_of(name) for name in names}) == 1, names


@pytest.mark.parametrize("partitions", [1, 3, 4, 16, 100, 1024])
def test_partitions_spread_evenly_over_the_slots(partitions: int) -> None:
    for p in range(partitions):
        slot = key_slot(partition_tag(p, partitions).encode())
        assert p * REDIS_CLUSTER_HASH_SLOTS // partitions <= slot
        assert slot < (p + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions


def test_a_commit_plan_keeps_its_own_slot_and_sends_the_rest_elsewhere() -> None:
    keys = Keys("rt:", cluster=True, partitions=4)
    own = "metrics.a"
    other = next(t for t in (f"t{n}" for n in range(99)) if partition_of(t, 4) != 2)
    assert partition_of(own, 4) == 2
    plan = CommitPlan(
        history=[
            HistoryWrite(keys.topic(own), "1-0", ["ts", "1"]),
            HistoryWrite(keys.topic(other), "1-0", ["ts", "1"]),
            HistoryWrite(keys.topic(own), "2-0", ["ts", "2"]),
        ],
        publishes=[(keys.topic_channel(own), b"a"), (keys.topic_channel(other), b"b")],
        routed=[(keys.ingest(partition_of(other, 4)), ["topic", other])],
        acks=["9-0"],
    )
    parts = split(plan, slot_of(keys.ingest(partition_of(own, 4))))
    assert [w.id for w in parts.own.history] == ["1-0", "2-0"]
    assert parts.history_index == [0, 2]  # a failure in own history maps back to the plan
    assert parts.own.publishes == [(keys.topic_channel(own), b"a")]
    assert parts.own.routed == []
    assert parts.own.acks == ["9-0"]
    [elsewhere] = parts.elsewhere.values()
    assert [w.key for w in elsewhere.history] == [keys.topic(other)]
    assert elsewhere.history_index == [1]  # and one elsewhere, too
    assert elsewhere.publishes == [(keys.topic_channel(other), b"b")]
    assert elsewhere.routed == plan.routed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_URL": "unix:///r.sock"}, "needs a redis:// or rediss://"),
        ({"REDIS_URL": "redis+sentinel://h:1/0/s"}, "needs a redis:// or rediss://"),
        ({"REALTIME_PREFIX": "rt{x}:"}, "must not contain { or }"),
        ({"REALTIME_WAIT_REPLICAS": "1"}, "not supported"),
        ({"REALTIME_PARTITIONS": "16385"}, "<= 16384"),
    ],
)
def test_cluster_mode_refuses_what_it_cannot_do(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"REALTIME_REDIS_CLUSTER": "1", **env})


pair = st.tuples(topics, st.text(min_size=1, max_size=12, alphabet=st.sampled_from("ab:1{}|")))


@given(first=pair, second=pair, cluster=st.booleans())
def test_idempotency_keys_name_one_topic_and_key_only(
    first: tuple[str, str], second: tuple[str, str], cluster: bool
) -> None:
    """V2: both parts may contain ':'; distinct pairs never share a key, and no key of
    the current layout is one of the legacy layout's."""
    keys = Keys("rt:", cluster=cluster, partitions=4)
    if first != second:
        assert keys.idempotency(*first) != keys.idempotency(*second)
    assert keys.idempotency(*first) != keys.legacy_idempotency(*second)


def test_the_colliding_pair_of_the_attack_gets_two_keys() -> None:
    keys = Keys("rt:")
    assert keys.idempotency("orders:eu", "42") != keys.idempotency("orders", "eu:42")
