"""`errors.describe`: the one-line form of an error object the CLI and clients show."""

from __future__ import annotations

from typing import Any

import pytest

from realtime.client import SubscribeError
from realtime.core.errors import describe, error_body

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error", "line"),
    [
        ({"code": "limit", "message": "Too many."}, "limit: Too many."),
        (
            error_body("invalid", "Invalid event.", {"data": ["Not a valid mapping type."]})[
                "error"
            ],
            "invalid: Invalid event. (data: Not a valid mapping type.)",
        ),
        (  # a batch: per index, per field, several problems
            {
                "code": "invalid",
                "message": "Invalid events.",
                "fields": {"1": {"topic": ["Missing.", "Bad."], "ts": ["Too big."]}},
            },
            "invalid: Invalid events. (1.topic: Missing. Bad.; 1.ts: Too big.)",
        ),
        ("plain text", "plain text"),
        ({"message": "no code"}, "error: no code"),
    ],
)
def test_an_error_reads_as_one_line_with_its_fields(error: Any, line: str) -> None:
    assert describe(error) == line


def test_a_refused_subscription_carries_the_field_details() -> None:
    ack = {"ok": False, **error_body("invalid", "Invalid.", {"snapshot": ["Not a number."]})}
    error = SubscribeError("metrics.cpu", ack)
    expected = "subscribe metrics.cpu refused: invalid: Invalid. (snapshot: Not a number.)"
    assert str(error) == expected
    assert error.code == "invalid"
