"""Unit tests: the predicate language of pipelines (`drop_if`, `when`)."""

from __future__ import annotations

from typing import Any

import pytest

from processors.pipelines.predicates import PredicateError, parse

pytestmark = pytest.mark.unit

DATA: dict[str, Any] = {
    "value": 5,
    "ratio": 0.5,
    "region": "eu",
    "ok": True,
    "none": None,
    "user": {"tier": "gold", "age": 40},
    "tags": ["a"],
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("value < 10", True),
        ("value<10", True),
        ("value <= 5", True),
        ("value > 5", False),
        ("value >= 5.0", True),
        ("value == 5", True),
        ("value == 5.0", True),  # 5 and 5.0 are the same JSON number
        ("value != 5", False),
        ("ratio > 0.25", True),
        ('region == "eu"', True),
        ('region != "us"', True),
        ('region < "fr"', True),  # strings compare with strings
        ('value < "9"', False),  # a number never compares with a string
        ("ok == true", True),
        ("ok == 1", False),  # true is not the number 1
        ("value == true", False),
        ("none == null", True),
        ("none != null", False),
        ('user.tier == "gold"', True),
        ("user.age > 30", True),
        ("user.missing == 1", False),
        ("region.sub == 1", False),  # path through a string
        ("missing < 1", False),  # a missing field: every comparison is false
        ("missing != 1", False),
        ('region in ["eu", "us"]', True),
        ('region not in ["eu", "us"]', False),
        ("value in [1, 5]", True),
        ("value in [true]", False),
        ("missing not in [1]", False),
        ("user exists", True),
        ("missing exists", False),
        ("missing missing", True),
        ("tags == 1", False),
        ({"any": ["value > 100", 'region == "eu"']}, True),
        ({"all": ["value > 100", 'region == "eu"']}, False),
        ({"not": "value > 100"}, True),
        ({"all": [{"not": "missing exists"}, {"any": ["ok == true"]}]}, True),
    ],
)
def test_evaluation(spec: object, expected: bool) -> None:
    assert parse(spec)(DATA) is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("value <", "cannot parse"),
        ("value = 1", "cannot parse"),
        ("value < abc", "not a JSON literal"),
        ("value < 'x'", "not a JSON literal"),
        ("value < null", "needs a number or a string"),
        ("value == [1]", "compare with"),
        ("value in 1", "JSON list"),
        ("value in [[1]]", "JSON list"),
        ("__import__('os') == 1", "cannot parse"),
        ("1value == 1", "cannot parse"),
        ({"any": []}, "non-empty list"),
        ({"some": ["value > 1"]}, "one key"),
        ({"any": ["value > 1"], "all": ["value > 1"]}, "one key"),
        (["value > 1"], "one key"),
        (42, "one key"),
    ],
)
def test_parse_errors_say_what_is_wrong(spec: object, message: str) -> None:
    with pytest.raises(PredicateError, match=message):
        parse(spec)


def test_nesting_is_bounded() -> None:
    spec: object = "value > 1"
    for _ in range(10):
        spec = {"not": spec}
    with pytest.raises(PredicateError, match="nest"):
        parse(spec)


def test_a_predicate_never_raises_on_odd_data() -> None:
    predicate = parse({"any": ["a.b > 1", 'a.b == "x"', "a in [1]", "a exists"]})
    for data in ({}, {"a": None}, {"a": [1, 2]}, {"a": {"b": {"c": 1}}}, {"a": "str"}):
        assert predicate(data) in (True, False)
