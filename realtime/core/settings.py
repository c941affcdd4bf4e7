"""Configuration: read from the environment once, at the entry point, then passed down.

Every environment variable the system understands is read here and nowhere else.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from realtime.core.redisurl import RedisUrlError, check_url, scheme_of

DEFAULT_PORT = 8080


class SettingsError(ValueError):
    """An environment variable has a value we cannot use; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


# Older names still read, each for a field that has a newer variable of its own.
LEGACY_VARIABLES = frozenset({"REALTIME_PING_INTERVAL_S", "REALTIME_PING_TIMEOUT_S"})


def _ms(env: Mapping[str, str], stem: str, default: int) -> int:
    """`<stem>_MS` in milliseconds, else the older `<stem>_S` in whole seconds (both are
    read either way, so `environment_variables` lists both)."""
    ms = _int(env, f"{stem}_MS", 0, minimum=1)
    seconds = _int(env, f"{stem}_S", 0, minimum=1)
    return ms or seconds * 1000 or default


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "")
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated IPs or CIDR networks, each checked (SettingsError names it)."""
    items = _list(env, name)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not an IP address or network") from None
    return items


@dataclass(frozen=True)
class IngestKeySpec:
    """One publish key of `REALTIME_INGEST_KEYS` and the topic patterns it may publish to
    (empty: every topic)."""

    key: str = field(repr=False)
    topics: tuple[str, ...] = ()


MIN_INGEST_KEY_CHARS = 16
MIN_JWT_SECRET_CHARS = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
_KEY_CHARS = re.compile(r"^[A-Za-z0-9_.~+/=-]+$")
_TOPIC_GLOB = re.compile(r"^[a-z0-9_.:*?\[\]!-]{1,128}$")


def _ingest_keys(env: Mapping[str, str], name: str) -> tuple[IngestKeySpec, ...]:
    """`KEY` or `KEY:PATTERN|PATTERN`, comma-separated. Messages never quote a key."""
    specs: list[IngestKeySpec] = []
    for n, entry in enumerate(_list(env, name), start=1):
        key, colon, patterns = entry.partition(":")
        key = key.strip()
        if len(key) < MIN_INGEST_KEY_CHARS or not _KEY_CHARS.fullmatch(key):
            raise SettingsError(
                f"{name}: key {n} must be at least {MIN_INGEST_KEY_CHARS} characters of "
                "A-Z a-z 0-9 _ . ~ + / = - (e.g. `openssl rand -hex 32`)"
            )
        topics = tuple(p.strip() for p in patterns.split("|") if p.strip())
        bad = [p for p in topics if not _TOPIC_GLOB.fullmatch(p)]
        if bad or (colon and not topics):
            raise SettingsError(
                f"{name}: key {n} has an invalid topic pattern {bad[0] if bad else patterns!r} "
                "(topic characters and the globs * ? [...])"
            )
        specs.append(IngestKeySpec(key, topics))
    return tuple(specs)


def _pem(env: Mapping[str, str], name: str) -> str:
    # One-line environments (.env files, some CI UIs) carry the PEM with literal \n.
    raw = env.get(name, "").strip().replace("\\n", "\n")
    if raw and not (raw.startswith("-----BEGIN ") and "PUBLIC KEY-----" in raw):
        raise SettingsError(f"{name} must be a PEM public key (-----BEGIN PUBLIC KEY-----...)")
    return raw


def secret(default: str = "") -> Any:
    """A setting that holds a secret: left out of `repr` and redacted from every log line."""
    return field(default=default, repr=False, metadata={"secret": True})


LOG_FORMATS = ("plain", "json")


def default_consumer_name() -> str:
    """Unique per worker process: host (the pod name on Kubernetes) and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _check_cluster(settings: Settings) -> None:
    if scheme_of(settings.redis_url) not in ("redis", "rediss"):
        raise SettingsError(
            "REALTIME_REDIS_CLUSTER=1 needs a redis:// or rediss:// REDIS_URL (any node)"
        )
    if "{" in settings.prefix or "}" in settings.prefix:
        raise SettingsError("REALTIME_PREFIX must not contain { or } with REALTIME_REDIS_CLUSTER")
    if settings.partitions > 16384:
        raise SettingsError("REALTIME_PARTITIONS must be <= 16384 with REALTIME_REDIS_CLUSTER")
    if settings.wait_replicas:
        raise SettingsError("REALTIME_WAIT_REPLICAS is not supported with REALTIME_REDIS_CLUSTER")


@dataclass(frozen=True)
class Settings:
    """Everything a web or worker process needs to know, from `Settings.from_env`."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    # Connections the kernel completes and holds for the web before it accepts them: a
    # reconnect storm (every client of an instance that went away) arrives at once, and
    # a SYN that finds the queue full is dropped and retried by the client a second later.
    listen_backlog: int = 2048
    prefix: str = "rt:"
    insecure: bool = False
    cors_origins: tuple[str, ...] = ()
    # Engine.IO heartbeat: the server pings every interval; no pong within the timeout
    # closes the connection (socket.io's defaults), announced exactly in the handshake.
    ping_interval_ms: int = 25_000
    ping_timeout_ms: int = 20_000
    # delivery to clients: see the README's performance section and "Slow clients"
    ws_compression: bool = False
    batch_tick_ms: float = 5.0
    client_backlog_bytes: int = 1_048_576
    client_backlog_packets: int = 1000
    slow_client_s: float = 30.0
    # connection-state recovery: how long a session can be recovered (0: off, and
    # `update` packets carry no offset): realtime/delivery/recovery.py
    recovery_s: float = 120.0
    # a comment on an idle Server-Sent Events stream this often (realtime/web/stream.py)
    sse_heartbeat_s: float = 15.0
    # presence (realtime/delivery/presence.py): a dead instance stops counting this long
    # after its last heartbeat; counts are written at most once per flush interval
    presence_ttl_s: float = 15.0
    presence_flush_ms: float = 250.0
    log_level: str = "INFO"
    # every other library's loggers (redis, aiohttp, socketio, ...): realtime/core/logs.py
    library_log_level: str = "WARNING"
    # The built dashboard served at `/`; empty: the one built into the package.
    dashboard_dir: str = ""
    # ingest
    partitions: int = 4
    max_body_bytes: int = 1_048_576
    max_batch: int = 1000
    idempotency_ttl_s: int = 3600
    # auth (realtime/web/auth.py, realtime/ingest/publish_keys.py)
    jwt_secret: str = secret()
    jwt_public_key: str = field(default="", repr=False)
    jwt_audience: str = ""
    jwt_issuer: str = ""
    ingest_keys: tuple[IngestKeySpec, ...] = field(
        default=(), repr=False, metadata={"secret": True}
    )
    # limits: body, event and message sizes (realtime/ingest, realtime/transport), subscriptions
    # and connections (realtime/web/access.py)
    max_event_bytes: int = 65_536
    max_message_bytes: int = 65_536
    max_subscriptions: int = 100
    subscribe_rate: float = 10.0
    # Events a client may send besides subscribe/unsubscribe (extensions' events), per
    # second, across its namespaces; 0: no limit.
    event_rate: float = 100.0
    max_connections: int = 10_000
    connect_timeout_s: float = 45.0
    # A request's headers (from the connection's start, or the end of the previous
    # response: also the idle keep-alive limit) and its body must each arrive within this.
    read_timeout_s: float = 30.0
    # Peers (IPs or CIDR networks) whose X-Forwarded-For/-Proto/-Host are believed
    # (realtime/core/peer.py).
    trusted_proxies: tuple[str, ...] = ()
    # An Engine.IO session takes requests only from the address that opened it.
    bind_sessions: bool = True
    # Failed credentials (admin, /metrics, publish keys) per client address and per
    # credential before each further one locks it out, doubling up to the maximum
    # (realtime/core/throttle.py); 0: no throttling.
    auth_failures: int = 5
    auth_lockout_max_s: float = 900.0
    ingest_rate: int = 10_000
    # command-line clients: the token `realtime watch` presents, the key `publish` sends
    token: str = secret()
    ingest_key: str = secret()
    # history
    history_maxlen: int = 10_000
    # a topic with no event for this long leaves the topic directory (GET /api/v1/topics)
    directory_idle_s: int = 86_400
    # how long history is kept, for topics no `retention` rule of the pipelines names
    history_retention_ms: int = 900_000
    # worker
    consumer: str = field(default_factory=default_consumer_name)
    group: str = "processors"
    batch_size: int = 256
    block_ms: int = 1000
    lease_ms: int = 5000
    max_attempts: int = 5
    pipelines_file: str = ""  # empty: the built-in default pipelines
    checkpoint_ms: int = 1000  # window state saved (and its entries acked) this often
    # redis client
    redis_timeout_s: float = 5.0
    # rediss:// without certificate verification (Heroku Redis serves a self-signed one)
    redis_tls_verify: bool = True
    # ingest answers 202 only once this many replicas have the events (Redis WAIT)
    wait_replicas: int = 0
    # REDIS_URL names a node of a Redis Cluster (hash-tagged keys, sharded pub/sub)
    redis_cluster: bool = False
    # operations: log format, Socket.IO Admin UI
    log_format: str = "plain"
    admin_user: str = ""
    admin_password: str = secret()
    admin_read_only: bool = True
    admin_origin: str = "https://admin.socket.io"
    # operations: a private /metrics port (0: none), the drain on SIGTERM
    metrics_port: int = 0
    drain_s: float = 20.0
    # `pkg.module:callable`s set up with the Socket.IO server and the app (web/extensions.py)
    extensions: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from environment variables (`os.environ` by default)."""
        e: Mapping[str, str] = os.environ if env is None else env
        prefix = e.get("REALTIME_PREFIX", "rt:")
        if not prefix:
            raise SettingsError("REALTIME_PREFIX must not be empty")
        settings = cls(
            redis_url=e.get("REDIS_URL", "").strip() or cls.redis_url,
            host=e.get("REALTIME_HOST", "").strip() or cls.host,
            port=_int(e, "PORT", DEFAULT_PORT, minimum=0),
            listen_backlog=_int(e, "REALTIME_LISTEN_BACKLOG", cls.listen_backlog, minimum=1),
            prefix=prefix,
            insecure=_bool(e, "REALTIME_INSECURE"),
            cors_origins=_list(e, "REALTIME_CORS_ORIGINS"),
            trusted_proxies=_networks(e, "REALTIME_TRUSTED_PROXIES"),
            bind_sessions=_bool(e, "REALTIME_BIND_SESSIONS", default=True),
            auth_failures=_int(e, "REALTIME_AUTH_FAILURES", cls.auth_failures, minimum=0),
            auth_lockout_max_s=_float(
                e, "REALTIME_AUTH_LOCKOUT_MAX_S", cls.auth_lockout_max_s, minimum=1.0
            ),
            ping_interval_ms=_ms(e, "REALTIME_PING_INTERVAL", cls.ping_interval_ms),
            ping_timeout_ms=_ms(e, "REALTIME_PING_TIMEOUT", cls.ping_timeout_ms),
            ws_compression=_bool(e, "REALTIME_WS_COMPRESSION"),
            batch_tick_ms=_float(e, "REALTIME_BATCH_TICK_MS", cls.batch_tick_ms),
            client_backlog_bytes=_int(
                e, "REALTIME_CLIENT_BACKLOG_BYTES", cls.client_backlog_bytes, minimum=1024
            ),
            client_backlog_packets=_int(
                e, "REALTIME_CLIENT_BACKLOG_PACKETS", cls.client_backlog_packets, minimum=1
            ),
            slow_client_s=_float(e, "REALTIME_SLOW_CLIENT_S", cls.slow_client_s, 0.1),
            recovery_s=_float(e, "REALTIME_RECOVERY_S", cls.recovery_s),
            sse_heartbeat_s=_float(e, "REALTIME_SSE_HEARTBEAT_S", cls.sse_heartbeat_s, 0.1),
            presence_ttl_s=_float(e, "REALTIME_PRESENCE_TTL_S", cls.presence_ttl_s, 0.5),
            presence_flush_ms=_float(e, "REALTIME_PRESENCE_FLUSH_MS", cls.presence_flush_ms, 10),
            log_level=e.get("REALTIME_LOG_LEVEL", "").strip().upper() or cls.log_level,
            library_log_level=e.get("REALTIME_LIBRARY_LOG_LEVEL", "").strip().upper()
            or cls.library_log_level,
            dashboard_dir=e.get("REALTIME_DASHBOARD_DIR", "").strip(),
            partitions=_int(e, "REALTIME_PARTITIONS", cls.partitions, minimum=1),
            max_body_bytes=_int(e, "REALTIME_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1),
            max_batch=_int(e, "REALTIME_MAX_BATCH", cls.max_batch, minimum=1),
            idempotency_ttl_s=_int(
                e, "REALTIME_IDEMPOTENCY_TTL_S", cls.idempotency_ttl_s, minimum=1
            ),
            jwt_secret=e.get("REALTIME_JWT_SECRET", ""),
            jwt_public_key=_pem(e, "REALTIME_JWT_PUBLIC_KEY"),
            jwt_audience=e.get("REALTIME_JWT_AUDIENCE", "").strip(),
            jwt_issuer=e.get("REALTIME_JWT_ISSUER", "").strip(),
            ingest_keys=_ingest_keys(e, "REALTIME_INGEST_KEYS"),
            max_event_bytes=_int(e, "REALTIME_MAX_EVENT_BYTES", cls.max_event_bytes, minimum=1),
            max_message_bytes=_int(
                e, "REALTIME_MAX_MESSAGE_BYTES", cls.max_message_bytes, minimum=1024
            ),
            max_subscriptions=_int(
                e, "REALTIME_MAX_SUBSCRIPTIONS", cls.max_subscriptions, minimum=1
            ),
            subscribe_rate=_float(e, "REALTIME_SUBSCRIBE_RATE", cls.subscribe_rate, 0.01),
            event_rate=_float(e, "REALTIME_EVENT_RATE", cls.event_rate),
            max_connections=_int(e, "REALTIME_MAX_CONNECTIONS", cls.max_connections, minimum=1),
            read_timeout_s=_float(e, "REALTIME_READ_TIMEOUT_S", cls.read_timeout_s, minimum=0.1),
            connect_timeout_s=_float(
                e, "REALTIME_CONNECT_TIMEOUT_S", cls.connect_timeout_s, minimum=0.1
            ),
            ingest_rate=_int(e, "REALTIME_INGEST_RATE", cls.ingest_rate, minimum=0),
            token=e.get("REALTIME_TOKEN", "").strip(),
            ingest_key=e.get("REALTIME_INGEST_KEY", "").strip(),
            history_maxlen=_int(e, "REALTIME_HISTORY_MAXLEN", cls.history_maxlen, minimum=1),
            directory_idle_s=_int(e, "REALTIME_DIRECTORY_IDLE_S", cls.directory_idle_s, minimum=1),
            history_retention_ms=_int(
                e, "REALTIME_HISTORY_RETENTION_MS", cls.history_retention_ms, minimum=0
            ),
            consumer=e.get("REALTIME_CONSUMER", "").strip() or default_consumer_name(),
            batch_size=_int(e, "REALTIME_BATCH_SIZE", cls.batch_size, minimum=1),
            block_ms=_int(e, "REALTIME_BLOCK_MS", cls.block_ms, minimum=1),
            lease_ms=_int(e, "REALTIME_LEASE_MS", cls.lease_ms, minimum=300),
            max_attempts=_int(e, "REALTIME_MAX_ATTEMPTS", cls.max_attempts, minimum=1),
            pipelines_file=e.get("REALTIME_PIPELINES", "").strip(),
            checkpoint_ms=_int(e, "REALTIME_CHECKPOINT_MS", cls.checkpoint_ms, minimum=1),
            redis_timeout_s=_float(e, "REALTIME_REDIS_TIMEOUT_S", cls.redis_timeout_s, 0.1),
            redis_tls_verify=_bool(e, "REALTIME_REDIS_TLS_VERIFY", default=True),
            wait_replicas=_int(e, "REALTIME_WAIT_REPLICAS", cls.wait_replicas, minimum=0),
            redis_cluster=_bool(e, "REALTIME_REDIS_CLUSTER"),
            log_format=_choice(e, "REALTIME_LOG_FORMAT", LOG_FORMATS),
            admin_user=e.get("REALTIME_ADMIN_USER", "").strip(),
            admin_password=e.get("REALTIME_ADMIN_PASSWORD", ""),
            admin_read_only=_bool(e, "REALTIME_ADMIN_READ_ONLY", default=True),
            admin_origin=e.get("REALTIME_ADMIN_ORIGIN", cls.admin_origin).strip().rstrip("/"),
            metrics_port=_int(e, "REALTIME_METRICS_PORT", cls.metrics_port),
            drain_s=_float(e, "REALTIME_DRAIN_S", cls.drain_s),
            extensions=_list(e, "REALTIME_EXTENSIONS"),
        )
        try:
            check_url(settings.redis_url)
        except RedisUrlError as exc:
            raise SettingsError(f"REDIS_URL is not usable: {exc}") from None
        if settings.redis_cluster:
            _check_cluster(settings)
        if bool(settings.admin_user) != bool(settings.admin_password):
            raise SettingsError(
                "REALTIME_ADMIN_USER and REALTIME_ADMIN_PASSWORD must be set together"
            )
        if settings.jwt_secret and settings.jwt_public_key:
            raise SettingsError("set REALTIME_JWT_SECRET or REALTIME_JWT_PUBLIC_KEY, not both")
        if settings.jwt_secret and len(settings.jwt_secret) < MIN_JWT_SECRET_CHARS:
            raise SettingsError(
                f"REALTIME_JWT_SECRET must be at least {MIN_JWT_SECRET_CHARS} characters"
            )
        return replace(settings, **overrides) if overrides else settings

    @property
    def client_auth(self) -> bool:
        """Socket.IO connections must present a JWT."""
        return bool(self.jwt_secret or self.jwt_public_key)

    @property
    def ingest_auth(self) -> bool:
        """Ingest requests must carry a publish key."""
        return bool(self.ingest_keys)

    @property
    def admin_enabled(self) -> bool:
        return bool(self.admin_user and self.admin_password)

    def secret_values(self) -> tuple[str, ...]:
        """Every secret these settings hold (fields made with `secret()` and the Redis
        password), for the log redaction in `realtime.core.logs`."""
        values = [getattr(self, f.name) for f in fields(self) if f.metadata.get("secret")]
        flat = [v for value in values for v in (value if isinstance(value, tuple) else (value,))]
        flat += [spec.key for spec in self.ingest_keys]
        url = urlsplit(self.redis_url)
        query = parse_qs(url.query)
        passwords = [url.password or "", *query.get("password", [])]
        for password in passwords + query.get("sentinel_password", []):
            flat += [password, unquote(password)]
        return tuple(sorted({v for v in flat if isinstance(v, str) and v}, key=len, reverse=True))

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **overrides)

    def to_env(self) -> dict[str, str]:
        """The environment `from_env` reads back as these settings (`from_env(to_env(s))
        == s`): every field that differs from its default, by its variable's name. For
        starting another process with the same settings (the tests do)."""
        defaults = Settings.from_env({})
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value == getattr(defaults, f.name):
                continue
            name = env_name(f.name)
            if name is None:
                raise SettingsError(f"{f.name} has no environment variable; it cannot be passed")
            env[name] = _env_value(value)
        return env


# Fields whose variable is not REALTIME_ + the field's name in capitals; None: not read
# from the environment at all.
_ENV_NAMES: dict[str, str | None] = {
    "redis_url": "REDIS_URL",
    "port": "PORT",
    "pipelines_file": "REALTIME_PIPELINES",
    "group": None,
}


def env_name(field_name: str) -> str | None:
    """The environment variable `Settings.from_env` reads a field from (None: none)."""
    return _ENV_NAMES.get(field_name, f"REALTIME_{field_name.upper()}")


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(
            (f"{v.key}:{'|'.join(v.topics)}" if v.topics else v.key)
            if isinstance(v, IngestKeySpec)
            else str(v)
            for v in value
        )
    return str(value)


class _RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers every name asked of it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def environment_variables() -> frozenset[str]:
    """The names `Settings.from_env` reads, found by running it (so the list cannot drift
    from the code). It reads every variable unconditionally; keep it that way."""
    env = _RecordingEnv()
    Settings.from_env(env)
    return frozenset(env.names)
