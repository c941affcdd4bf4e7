"""Retention by time and resolution tiers, the pure parts: the pipelines file's
`retention` rules, the trim point of a write, which tier `resolution: "auto"` picks, and
whether a trimmed history still covers a position."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from processors.pipelines.config import DEFAULT_PIPELINES, PipelinesError, build
from processors.pipelines.retention import DEFAULT_RETENTION, Retention, trim_below
from processors.pipelines.tiers import Tier, pick, tiers_of
from processors.worker.history_writes import HistoryTargets, trim_step
from realtime.core.keys import Keys
from realtime.delivery.history import Extent, covers, reaches
from realtime.ingest.schemas import SubscribeSchema

pytestmark = pytest.mark.unit

DAY = 86_400_000


def test_the_first_matching_rule_wins_and_other_topics_keep_the_default() -> None:
    config = build(
        {
            **DEFAULT_PIPELINES,
            "retention": [
                {"match": ["metrics.*:1m", "orders.*"], "keep": "30d", "max_events": 50_000},
                {"match": "metrics.*", "keep": "1h"},
                {"match": "audit", "keep": 0},
            ],
        },
        "test",
    )
    retention = Retention(config.retention, default_keep_ms=900_000)
    assert retention.of("metrics.cpu:1m") == (30 * DAY, 50_000)
    assert retention.of("orders.eu") == (30 * DAY, 50_000)
    assert retention.of("metrics.cpu") == (3_600_000, 0)  # 0: REALTIME_HISTORY_MAXLEN
    assert retention.of("audit") == (0, 0)  # by count only
    assert retention.of("other") == (900_000, 0)


def test_without_a_retention_section_the_tiers_keep_an_hour_a_day_and_30_days() -> None:
    config = build(DEFAULT_PIPELINES, "test")
    assert config.retention == DEFAULT_RETENTION
    retention = Retention(config.retention, default_keep_ms=900_000)
    kept = {t: retention.of(f"metrics.cpu{t}") for t in ("", ":1s", ":10s", ":1m")}
    assert kept == {
        "": (900_000, 0),
        ":1s": (3_600_000, 0),
        ":10s": (DAY, 0),
        ":1m": (30 * DAY, 50_000),  # 43,200 minutes: above the default cap of 10,000
    }


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"match": "a.*"}, "retention[0].keep: Missing data for required field."),
        ({"match": "a.*", "keep": "10x"}, "retention[0].keep: not a duration"),
        ({"match": "A B", "keep": "1h"}, "retention[0].match: 'A B' is not a topic glob"),
        ({"match": "a", "keep": "1h", "max_events": 0}, "retention[0].max_events: Must be"),
        ({"match": "a", "keep": "1h", "maxlen": 5}, "retention[0].maxlen: Unknown field."),
    ],
)
def test_a_bad_rule_is_named_by_its_path(rule: dict[str, object], problem: str) -> None:
    with pytest.raises(PipelinesError) as caught:
        build({**DEFAULT_PIPELINES, "retention": [rule]}, "test")
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_a_write_trims_what_is_older_than_keep_before_it() -> None:
    assert trim_below("1700000900000-3", 900_000) == "1700000000000"
    assert trim_below("1700000900000-3", 0) == ""  # no time limit
    assert trim_below("500-0", 900_000) == ""  # nothing can be that old


def test_a_topic_is_trimmed_again_once_its_trim_point_has_moved_on_by_the_step() -> None:
    keep, t = 900_000, 1_700_000_000_000
    targets = HistoryTargets(Keys("t:"), Retention(default_keep_ms=keep))

    def minid(topic: str, ms: int) -> str:
        return targets.write(topic, f"{ms}-0", ms, {}).minid

    step = trim_step(keep)
    assert step == 1000
    assert minid("a", t) == str(t - keep)  # the first write trims
    assert minid("a", t + step - 1) == ""  # the history keeps at most keep + step
    assert minid("b", t + step - 1) == str(t + step - 1 - keep)  # each topic its own
    assert minid("a", t + step) == str(t + step - keep)
    assert minid("a", t + step) == ""
    assert (trim_step(640), trim_step(63)) == (10, 0)  # a short time limit: every write


TIERS = [
    Tier("m:1s", "1s", 1000, 3_600_000),
    Tier("m:10s", "10s", 10_000, DAY),
    Tier("m:1m", "1m", 60_000, 30 * DAY),
]


@pytest.mark.parametrize(
    ("range_ms", "points", "label"),
    [
        (300_000, 600, "1s"),  # 5 min: 500 ms a point, the finest is coarser
        (3_600_000, 600, "10s"),  # 1 h: 6 s a point
        (1_800_000, 3600, "1s"),  # 30 min in 3600 points: 500 ms
        (DAY, 600, "1m"),  # 144 s a point: every window is shorter, so the coarsest
        (7 * DAY, 600, "1m"),
        (2 * 3_600_000, 7200, "10s"),  # 1 s would do, but 1s keeps only an hour
        (60 * DAY, 600, "1m"),  # nothing keeps 60 days: the one that keeps longest
    ],
)
def test_auto_picks_the_finest_tier_that_draws_the_range_in_about_points(
    range_ms: int, points: int, label: str
) -> None:
    tier = pick(TIERS, range_ms, points)
    assert tier is not None
    assert tier.label == label


def test_the_tiers_of_a_topic_come_from_the_pipelines_that_aggregate_it() -> None:
    config = build(DEFAULT_PIPELINES, "test")
    retention = Retention(config.retention)
    tiers = tiers_of(config, "metrics.cpu", retention)
    assert [(t.topic, t.size_ms, t.keep_ms) for t in tiers] == [
        ("metrics.cpu:1s", 1000, 3_600_000),
        ("metrics.cpu:10s", 10_000, DAY),
        ("metrics.cpu:1m", 60_000, 30 * DAY),
    ]
    assert tiers_of(config, "metrics.cpu:10s", retention) == tiers  # a tier names its source
    assert tiers_of(config, "orders", retention) == []
    assert pick([], DAY, 600) is None  # served raw


def test_history_covers_a_position_after_time_trimming() -> None:
    trimmed = Extent(oldest=(2000, 0), length=5, added=9)  # four removed by time
    assert covers(trimmed, (2000, 0), maxlen=10_000)
    assert not covers(trimmed, (1999, 0), maxlen=10_000)
    # 0-0 (subscribed to an empty topic): short of the cap, yet entries were removed.
    assert not covers(trimmed, (0, 0), maxlen=10_000)
    assert covers(Extent((1, 0), 5, added=5), (0, 0), maxlen=5)  # full, nothing removed
    assert not covers(Extent((1, 0), 5, added=None), (0, 0), maxlen=5)  # Redis 6.2: by count
    # From a time: the whole range is held if an older event is, or nothing was removed.
    assert reaches(trimmed, (2001, 0), 10_000)
    assert not reaches(trimmed, (2000, 0), 10_000)
    assert reaches(Extent((2000, 0), 5, added=5), (1, 0), 10_000)
    assert reaches(Extent(None, 0, added=0), (1, 0), 10_000)  # no history yet


def test_from_and_since_are_exclusive_and_resolution_needs_a_range() -> None:
    schema = SubscribeSchema()
    assert schema.load({"topic": "a", "from": 5, "resolution": "auto", "points": 100}) == {
        "topic": "a",
        "from_": 5,
        "resolution": "auto",
        "points": 100,
    }
    for request, field in [
        ({"from": 5, "since": "1-0"}, "from"),
        ({"resolution": "auto"}, "resolution"),
        ({"from": 5, "resolution": "1m"}, "resolution"),
        ({"from": 5, "points": 100}, "points"),
        ({"from": 5, "resolution": "auto", "points": 5}, "points"),
        ({"from": "5"}, "from"),
        ({"from": True}, "from"),
        ({"from": -1}, "from"),
    ]:
        with pytest.raises(ValidationError) as caught:
            schema.load({"topic": "a", **request})
        assert set(caught.value.messages) == {field}, request
