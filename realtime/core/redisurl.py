"""Which Redis `REDIS_URL` names, checked once at start-up (pure: no I/O).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)


class RedisUrlError(ValueError):
    """The URL cannot name a Redis we can connect to; the message says why."""


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_sentinel(url: str) -> bool:
    return scheme_of(url) == SENTINEL_SCHEME


def _host_port(item: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep or not host:
        raise RedisUrlError(f"sentinel address {item!r} must be host:port")
    host = host.strip("[]")  # [::1]:26379
    try:
        number = int(port)
    except ValueError:
        raise RedisUrlError(f"sentinel address {item!r} has no valid port") from None
    if not 0 < number < 65536:
        raise RedisUrlError(f"sentinel address {item!r} has no valid port")
    return host, number


def parse_sentinel_url(url: str) -> SentinelTarget:
    parts = urlsplit(url)
    if parts.scheme.lower() != SENTINEL_SCHEME:
        raise RedisUrlError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise RedisUrlError("no sentinel address (host:port[,host:port...])")
    sentinels = tuple(_host_port(item) for item in hosts.split(","))
    segments = parts.path.split("/")  # "", db, service
    if len(segments) != 3 or not segments[2]:
        raise RedisUrlError("the path must be /db/service, e.g. /0/mymaster")
    try:
        db = int(segments[1] or "0")
    except ValueError:
        raise RedisUrlError(f"database {segments[1]!r} is not a number") from None
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - {"sentinel_username", "sentinel_password"})
    if unknown:
        raise RedisUrlError(f"unknown query argument(s): {', '.join(unknown)}")
    username, _, password = userinfo.partition(":")
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(segments[2]),
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
    )


def check_url(url: str) -> None:
    """Raise RedisUrlError unless `url` is one of the forms above."""
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        known = ", ".join(s + "://" for s in SCHEMES)
        raise RedisUrlError(f"scheme must be one of {known}, got {url.split(':')[0]!r}")
    if scheme == SENTINEL_SCHEME:
        parse_sentinel_url(url)
    elif scheme == "unix" and not urlsplit(url).path:
        raise RedisUrlError("unix:// needs the socket's path, e.g. unix:///run/redis.sock")
