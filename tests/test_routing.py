"""Unit tests: topic templates for routes and group-by keys."""

from __future__ import annotations

import re
from typing import Any

import pytest

from processors.pipelines.routing import (
    INVALID_TOPIC,
    MISSING_KEY,
    Template,
    TemplateError,
    key_text,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("template", "data", "topic"),
    [
        ("orders.by_region.{region}", {"region": "eu"}, "orders.by_region.eu"),
        ("orders.by_region.{region}", {"region": "EU"}, "orders.by_region.eu"),
        ("orders.{shop.id}.{topic}", {"shop": {"id": 7}}, "orders.7.orders.in"),
        ("flags.{on}", {"on": False}, "flags.false"),
        ("x.{n}", {"n": 3.0}, "x.3"),
        ("x.{n}", {"n": 1.5}, "x.1.5"),
        ("copy.{topic}", {}, "copy.orders.in"),
        ("static.topic", {"region": "eu"}, "static.topic"),
    ],
)
def test_render(template: str, data: dict[str, Any], topic: str) -> None:
    rendered = Template(template).render("orders.in", data)
    assert (rendered.topic, rendered.problem) == (topic, None)


@pytest.mark.parametrize(
    ("data", "problem", "detail"),
    [
        ({}, MISSING_KEY, "'region': missing"),
        ({"region": None}, MISSING_KEY, "NoneType"),
        ({"region": {"a": 1}}, MISSING_KEY, "dict"),
        ({"region": ["eu"]}, MISSING_KEY, "list"),
        ({"region": "eu west"}, INVALID_TOPIC, "'orders.by_region.eu west'"),
        ({"region": "ü"}, INVALID_TOPIC, "not a valid topic"),
        ({"region": "x" * 200}, INVALID_TOPIC, "not a valid topic"),
    ],
)
def test_keys_that_make_no_topic_say_why(data: dict[str, Any], problem: str, detail: str) -> None:
    rendered = Template("orders.by_region.{region}").render("orders", data)
    assert rendered.topic is None
    assert rendered.problem == problem
    assert detail in rendered.detail


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a.{b c}", "not {topic} or a data field path"),
        ("a.{}", "not {topic}"),
        ("a.{b", "unbalanced"),
        ("a.b}", "unbalanced"),
    ],
)
def test_bad_templates(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        Template(source)


def test_restricted_placeholders() -> None:
    template = Template("{topic}:{window}", frozenset({"topic", "window"}))
    assert template.fill({"topic": "m.cpu", "window": "1s"}) == "m.cpu:1s"
    with pytest.raises(TemplateError, match=re.escape("allowed: {topic}, {window}")):
        Template("{topic}:{size}", frozenset({"topic", "window"}))


def test_key_text() -> None:
    assert key_text("Eu-West") == "eu-west"
    assert key_text(True) == "true"
    assert key_text(12) == "12"
    assert key_text(None) is None
