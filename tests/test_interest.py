"""Interest bookkeeping (pure): which topic channels to SUBSCRIBE / UNSUBSCRIBE, and when
Redis has confirmed a topic's subscription, answers matched to requests in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.fanout.interest import Interest

pytestmark = pytest.mark.unit


def test_first_want_subscribes_and_the_answer_confirms() -> None:
    interest = Interest()
    assert interest.want("a", True)
    assert interest.plan() == (["a"], [])
    assert not interest.is_confirmed("a")
    assert interest.answered("a")
    assert interest.is_confirmed("a")
    assert not interest.want("a", True)  # already asked for: nothing to send
    assert interest.plan() == ([], [])


def test_changes_that_cancel_out_before_the_plan_send_nothing() -> None:
    interest = Interest()
    interest.want("a", True)
    interest.plan()
    interest.answered("a")
    interest.want("a", False)
    interest.want("a", True)
    assert interest.plan() == ([], [])
    assert interest.is_confirmed("a")  # never unsubscribed: still confirmed


def test_resubscribe_is_confirmed_only_by_its_own_answer() -> None:
    interest = Interest()
    interest.want("a", True)
    interest.plan()  # SUBSCRIBE a
    interest.want("a", False)
    assert interest.plan() == ([], ["a"])  # UNSUBSCRIBE a, before the first answer
    interest.want("a", True)
    assert interest.plan() == (["a"], [])  # SUBSCRIBE a again
    assert not interest.answered("a")  # the first SUBSCRIBE's answer
    assert not interest.is_confirmed("a")
    assert interest.answered("a")  # the second's
    assert interest.is_confirmed("a")


def test_an_answer_after_unsubscribing_does_not_confirm() -> None:
    interest = Interest()
    interest.want("a", True)
    interest.plan()
    interest.want("a", False)
    interest.plan()
    assert not interest.answered("a")
    assert not interest.is_confirmed("a")


def test_reset_keeps_what_is_wanted_for_the_next_connection() -> None:
    interest = Interest()
    for topic in ("a", "b"):
        interest.want(topic, True)
    interest.plan()
    interest.answered("a")
    interest.reset()
    assert not interest.is_confirmed("a")
    assert interest.plan() == (["a", "b"], [])
    assert not interest.answered("c")  # an answer nobody asked for changes nothing


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans(), st.booleans()), max_size=40))
def test_confirmed_means_redis_has_the_subscription(
    steps: list[tuple[str, bool, bool]],
) -> None:
    """Against a model of Redis answering one connection's commands in order: a topic is
    confirmed only while Redis has it subscribed, and once every command is answered each
    wanted topic is confirmed."""
    interest = Interest()
    queue: list[tuple[str, str]] = []  # commands sent, not yet answered
    subscribed: set[str] = set()  # Redis's side

    def answer_one() -> None:
        command, topic = queue.pop(0)
        if command == "subscribe":
            subscribed.add(topic)
            interest.answered(topic)
        else:
            subscribed.discard(topic)

    for topic, wanted, flush in steps:
        interest.want(topic, wanted)
        if flush:
            subscribe, unsubscribe = interest.plan()
            queue += [("unsubscribe", t) for t in unsubscribe]
            queue += [("subscribe", t) for t in subscribe]
        elif queue:
            answer_one()
        for confirmed in interest.confirmed:
            assert confirmed in subscribed
    subscribe, unsubscribe = interest.plan()
    queue += [("unsubscribe", t) for t in unsubscribe] + [("subscribe", t) for t in subscribe]
    while queue:
        answer_one()
    assert interest.confirmed == interest.wanted == subscribed
