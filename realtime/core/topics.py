"""Topic rules: which names are valid, which ingest partition a topic belongs to, and the
bounds of a subscription's max_rate."""

from __future__ import annotations

import re
import zlib

TOPIC_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,127}$"
# Always with fullmatch: `$` alone also matches before a trailing newline.
_TOPIC_RE = re.compile(TOPIC_PATTERN, re.ASCII)


def is_valid_topic(name: object) -> bool:
    return isinstance(name, str) and _TOPIC_RE.fullmatch(name) is not None


def partition_of(topic: str, partitions: int) -> int:
    """Stable across processes, hosts and Python versions: CRC-32 of the UTF-8 name.

    (Python's built-in `hash` is salted per process, so it cannot be used.)
    """
    return zlib.crc32(topic.encode("utf-8")) % partitions


# A subscription's `max_rate` (updates per second for its topic), as `subscribe` accepts it.
MIN_RATE_HZ = 0.01
MAX_RATE_HZ = 100.0
