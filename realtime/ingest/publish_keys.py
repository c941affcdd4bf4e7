"""Ingest auth, at the door of the first step of the data path: `Authorization: Bearer
<key>` with the publish keys of `REALTIME_INGEST_KEYS`, each optionally limited to topic
patterns. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from fnmatch import fnmatchcase

from realtime.core.settings import IngestKeySpec, Settings


class Unauthorized(Exception):
    """No usable key: the message is for the producer (it never echoes what was sent)."""


@dataclass(frozen=True)
class PublishKey:
    """An authenticated producer. `name` identifies the key in logs and in Redis (a hash
    prefix: the key itself is never written anywhere)."""

    name: str
    topics: tuple[str, ...]  # empty: every topic

    def allows(self, topic: str) -> bool:
        return not self.topics or any(fnmatchcase(topic, p) for p in self.topics)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class IngestKeys:
    def __init__(self, specs: tuple[IngestKeySpec, ...]) -> None:
        self._keys = [
            (_digest(spec.key), PublishKey(_digest(spec.key).hex()[:12], spec.topics))
            for spec in specs
        ]

    @staticmethod
    def _given(authorization: str | None) -> str | None:
        scheme, _, given = (authorization or "").partition(" ")
        return given.strip() if scheme.lower() == "bearer" and given.strip() else None

    def presented(self, authorization: str | None) -> str | None:
        """A name for the key an `Authorization` header presents, right or wrong (a hash
        prefix, for the credential throttle), or None if it presents none."""
        given = self._given(authorization)
        return None if given is None else _digest(given).hex()[:32]

    def authenticate(self, authorization: str | None) -> PublishKey:
        """The key an `Authorization` header carries; raises Unauthorized."""
        given = self._given(authorization)
        if given is None:
            raise Unauthorized("Send the publish key as 'Authorization: Bearer <key>'.")
        # Equal-length digests, and every key compared: the time taken says nothing
        # about how much of which key matched.
        digest = _digest(given)
        found: PublishKey | None = None
        for known, key in self._keys:
            if hmac.compare_digest(digest, known):
                found = key
        if found is None:
            raise Unauthorized("The publish key is not valid.")
        return found


def ingest_keys(settings: Settings) -> IngestKeys | None:
    """The keys for these settings, or None when ingest is not authenticated."""
    return IngestKeys(settings.ingest_keys) if settings.ingest_auth else None
