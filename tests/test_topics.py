"""Unit tests: topic names and the topic -> partition hash."""

from __future__ import annotations

import zlib

import pytest

from realtime.core.topics import is_valid_topic, partition_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "name", ["a", "0", "metrics.cpu", "orders.by_region.eu", "a:b-c_d", "a" * 128]
)
def test_valid_topics(name: str) -> None:
    assert is_valid_topic(name)


@pytest.mark.parametrize(
    "name", ["", "A", "_a", ".a", "a b", "a/b", "a" * 129, "é", "a\n", None, 3, b"abc"]
)
def test_invalid_topics(name: object) -> None:
    assert not is_valid_topic(name)


def test_partition_is_crc32_mod_partitions() -> None:
    # The documented hash: producers in other languages can compute it too.
    assert partition_of("metrics.cpu", 16) == zlib.crc32(b"metrics.cpu") % 16
    assert partition_of("metrics.cpu", 1) == 0


def test_partitions_spread_topics() -> None:
    used = {partition_of(f"topic.{i}", 8) for i in range(200)}
    assert used == set(range(8))


def test_stream_ids_are_ascii_digits_within_64_bits() -> None:
    from realtime.core.streamids import StreamIdError, is_stream_id, parse_id

    assert parse_id(f"{2**64 - 1}-0") == (2**64 - 1, 0)
    for bad in ["\u0661\u0662-0", "1-0\n", "\uff11-0", f"{2**64}-0"]:
        assert not is_stream_id(bad)
        with pytest.raises(StreamIdError):
            parse_id(bad)
