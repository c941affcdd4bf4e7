"""History entries decoded once (realtime/delivery/history.py `Decoded`): what a read
returns is what decoding each entry anew returns, whatever shape its fields arrive in,
and an entry written again under the same id is decoded again."""

from __future__ import annotations

import pytest

from realtime.delivery.history import Decoded, decode_event

pytestmark = pytest.mark.unit


def entry(n: int, data: bytes | None = None) -> tuple[bytes, list[bytes]]:
    return f"1700000000000-{n}".encode(), [b"ts", str(n).encode(), b"data", data or b'{"n":%d}' % n]


def fresh(topic: str, entries: list[tuple[bytes, list[bytes]]]) -> list[dict[str, object]]:
    """What each entry decodes to alone, its fields as redis-py parses them."""
    return [decode_event(topic, i, dict(zip(f[::2], f[1::2], strict=True))) for i, f in entries]


def test_each_entry_is_decoded_once_and_shared_by_later_reads() -> None:
    decoded = Decoded()
    page = [entry(n) for n in range(5)]
    first = decoded("t", page)
    again = decoded("t", page[2:])
    assert first == fresh("t", page)
    assert all(a is b for a, b in zip(again, first[2:], strict=True))
    assert decoded("u", page[:1])[0]["topic"] == "u"  # the same id in another topic


def test_fields_as_sent_in_any_order_or_as_parsed_read_the_same() -> None:
    ts_last = (b"1700000000000-7", [b"data", b'{"a":[1,2]}', b"extra", b"x", b"ts", b"7"])
    parsed = (b"1700000000000-8", {b"ts": b"8", b"data": b'"s"'})
    events = Decoded()("t", [ts_last, parsed])
    assert events == [
        {"topic": "t", "id": "1700000000000-7", "ts": 7, "data": {"a": [1, 2]}},
        {"topic": "t", "id": "1700000000000-8", "ts": 8, "data": "s"},
    ]
    with pytest.raises(KeyError):
        Decoded()("t", [(b"1-1", [b"ts", b"1"])])  # as decode_event fails: no data


def test_an_entry_written_again_under_its_id_is_decoded_again() -> None:
    decoded = Decoded()
    decoded("t", [entry(1)])
    rewritten = entry(1, b'{"n":"new"}')
    assert decoded("t", [rewritten]) == fresh("t", [rewritten])
    retimed = (rewritten[0], [b"ts", b"99", b"data", rewritten[1][3]])
    assert decoded("t", [retimed])[0]["ts"] == 99


def test_what_it_holds_is_bounded_by_data_bytes_oldest_dropped_first() -> None:
    decoded = Decoded(budget_bytes=30)
    page = [entry(n, b'"%08d"' % n) for n in range(5)]  # 10 bytes of data each
    first = decoded("t", page)
    assert len(decoded) == 3
    assert decoded("t", page[4:])[0] is first[4]  # kept: among the newest decoded
    again = decoded("t", page[:1])
    assert again == first[:1]
    assert again[0] is not first[0]  # dropped, decoded again
