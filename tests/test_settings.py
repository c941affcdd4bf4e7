"""Unit tests: settings come from the environment once, with clear errors."""

from __future__ import annotations

from dataclasses import fields

import pytest

from realtime.core.settings import (
    LEGACY_VARIABLES,
    IngestKeySpec,
    Settings,
    SettingsError,
    env_name,
    environment_variables,
)

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.port == 8080
    assert settings.prefix == "rt:"
    assert settings.insecure is False
    assert settings.cors_origins == ()
    assert settings.pipelines_file == ""


def test_values_from_env() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://r:1/2",
            "PORT": "5000",
            "REALTIME_PREFIX": "x:",
            "REALTIME_INSECURE": "1",
            "REALTIME_CORS_ORIGINS": "https://a.example, https://b.example",
            "REALTIME_PARTITIONS": "16",
            "REALTIME_HISTORY_MAXLEN": "500",
            "REALTIME_HISTORY_RETENTION_MS": "60000",
            "REALTIME_CONSUMER": "pod-7",
            "REALTIME_LEASE_MS": "2000",
            "REALTIME_MAX_ATTEMPTS": "3",
            "REALTIME_PIPELINES": " /etc/realtime/pipelines.yaml ",
            "REALTIME_IDEMPOTENCY_TTL_S": "60",
            "REALTIME_CHECKPOINT_MS": "250",
        }
    )
    assert settings.redis_url == "redis://r:1/2"
    assert settings.port == 5000
    assert settings.prefix == "x:"
    assert settings.insecure is True
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.partitions == 16
    assert settings.history_maxlen == 500
    assert settings.history_retention_ms == 60_000
    assert settings.consumer == "pod-7"
    assert settings.lease_ms == 2000
    assert settings.max_attempts == 3
    assert settings.pipelines_file == "/etc/realtime/pipelines.yaml"
    assert settings.idempotency_ttl_s == 60
    assert settings.checkpoint_ms == 250


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"REALTIME_PARTITIONS": "0"}, "REALTIME_PARTITIONS"),
        ({"REALTIME_INSECURE": "maybe"}, "REALTIME_INSECURE"),
        ({"REALTIME_PREFIX": ""}, "REALTIME_PREFIX"),
        ({"REALTIME_REDIS_TIMEOUT_S": "soon"}, "REALTIME_REDIS_TIMEOUT_S"),
        ({"REALTIME_LEASE_MS": "50"}, "REALTIME_LEASE_MS"),
        ({"REALTIME_MAX_ATTEMPTS": "0"}, "REALTIME_MAX_ATTEMPTS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_consumer_names_differ_between_processes_by_default() -> None:
    # host-pid: unique per process; two settings in one process share it.
    assert Settings.from_env({}).consumer.endswith(f"-{__import__('os').getpid()}")


def test_operations_settings() -> None:
    settings = Settings.from_env(
        {
            "REALTIME_LOG_FORMAT": "JSON",
            "REALTIME_ADMIN_USER": "ops",
            "REALTIME_ADMIN_PASSWORD": "pw",
            "REALTIME_ADMIN_ORIGIN": "https://admin.example.com/",
        }
    )
    assert settings.log_format == "json"
    assert settings.admin_enabled
    assert settings.admin_read_only
    assert settings.admin_origin == "https://admin.example.com"
    assert not Settings.from_env({}).admin_enabled


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"REALTIME_LOG_FORMAT": "xml"}, "REALTIME_LOG_FORMAT"),
        ({"REALTIME_ADMIN_USER": "ops"}, "REALTIME_ADMIN_PASSWORD"),
        ({"REALTIME_ADMIN_PASSWORD": "pw"}, "REALTIME_ADMIN_USER"),
    ],
)
def test_bad_operations_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_environment_variables_lists_what_from_env_reads() -> None:
    names = environment_variables()
    assert {"REDIS_URL", "PORT", "REALTIME_PARTITIONS", "REALTIME_LOG_FORMAT"} <= names
    # The naming rule of docs/configuration.md: REDIS_URL, PORT, and REALTIME_* only.
    assert all(n in {"REDIS_URL", "PORT"} or n.startswith("REALTIME_") for n in names)


def test_trusted_proxies_and_read_timeout() -> None:
    settings = Settings.from_env(
        {"REALTIME_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7,::1", "REALTIME_READ_TIMEOUT_S": "5"}
    )
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.7", "::1")
    assert settings.read_timeout_s == 5
    assert Settings.from_env({}).trusted_proxies == ()
    assert Settings.from_env({}).read_timeout_s == 30
    with pytest.raises(SettingsError, match="REALTIME_TRUSTED_PROXIES"):
        Settings.from_env({"REALTIME_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"})


# -- to_env: the way back, for starting processes with the same settings --------------------

_PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
_EVERYTHING = dict(
    redis_url="redis://:pw@10.0.0.7:6380/3",
    host="127.0.0.2",
    port=9001,
    listen_backlog=17,
    prefix="tt:",
    insecure=True,
    cors_origins=("https://a.example", "https://b.example"),
    ping_interval_ms=7500,
    ping_timeout_ms=800,
    ws_compression=True,
    batch_tick_ms=2.5,
    client_backlog_bytes=4096,
    client_backlog_packets=12,
    slow_client_s=3.5,
    recovery_s=45.0,
    sse_heartbeat_s=7.5,
    presence_ttl_s=4.5,
    presence_flush_ms=125.0,
    log_level="DEBUG",
    library_log_level="ERROR",
    dashboard_dir="/srv/dashboard",
    partitions=9,
    max_body_bytes=2048,
    max_batch=11,
    idempotency_ttl_s=99,
    jwt_audience="aud",
    jwt_issuer="iss",
    ingest_keys=(
        IngestKeySpec("k" * 20, ("metrics.*", "logs.?")),
        IngestKeySpec("q" * 16),
    ),
    max_event_bytes=1234,
    max_message_bytes=4321,
    max_subscriptions=5,
    subscribe_rate=2.5,
    event_rate=7.5,
    max_connections=77,
    connect_timeout_s=4.5,
    read_timeout_s=12.5,
    trusted_proxies=("10.0.0.0/8", "::1"),
    bind_sessions=False,
    auth_failures=3,
    auth_lockout_max_s=60.0,
    ingest_rate=55,
    token="a-token",
    ingest_key="an-ingest-key-of-some-length",
    history_maxlen=123,
    directory_idle_s=321,
    history_retention_ms=7000,
    consumer="worker-7",
    batch_size=31,
    block_ms=250,
    lease_ms=900,
    max_attempts=3,
    pipelines_file="/etc/pipelines.yaml",
    checkpoint_ms=750,
    redis_timeout_s=1.5,
    redis_tls_verify=False,
    log_format="json",
    admin_user="admin",
    admin_password="admin-password",
    admin_read_only=False,
    admin_origin="https://admin.example",
    metrics_port=9102,
    drain_s=6.5,
    extensions=("pkg.module:setup", "other:install"),
)
# Settings that from_env refuses together go in one of two objects each.
_WITH_SECRET = Settings(**_EVERYTHING, jwt_secret="s" * 40, wait_replicas=2)  # type: ignore[arg-type]
_WITH_KEY_ON_A_CLUSTER = Settings(
    **_EVERYTHING,  # type: ignore[arg-type]
    jwt_public_key=_PEM,
    redis_cluster=True,
)


@pytest.mark.parametrize("settings", [_WITH_SECRET, _WITH_KEY_ON_A_CLUSTER])
def test_to_env_is_read_back_as_the_same_settings(settings: Settings) -> None:
    assert Settings.from_env(settings.to_env()) == settings


def test_every_setting_has_a_variable_and_the_round_trip_covers_each() -> None:
    """A new setting that from_env does not read, or that these tests leave at its
    default, fails here (so it cannot silently never reach the test processes)."""
    defaults = Settings()
    names = {f.name for f in fields(Settings)} - {"group"}  # no variable: fixed
    assert {env_name(n) for n in names} | LEGACY_VARIABLES == environment_variables()
    changed = {
        n
        for n in names
        for s in (_WITH_SECRET, _WITH_KEY_ON_A_CLUSTER)
        if getattr(s, n) != getattr(defaults, n)
    }
    assert changed == names


def test_defaults_need_no_environment_and_group_cannot_be_passed() -> None:
    assert Settings(consumer=Settings.from_env({}).consumer).to_env() == {}
    with pytest.raises(SettingsError, match="group has no environment variable"):
        Settings(group="other").to_env()


@pytest.mark.parametrize(
    ("env", "interval_ms", "timeout_ms"),
    [
        ({}, 25_000, 20_000),
        ({"REALTIME_PING_INTERVAL_S": "7", "REALTIME_PING_TIMEOUT_S": "3"}, 7000, 3000),
        ({"REALTIME_PING_INTERVAL_MS": "750", "REALTIME_PING_TIMEOUT_MS": "400"}, 750, 400),
        # the millisecond variable wins over the older one in seconds
        ({"REALTIME_PING_INTERVAL_MS": "1500", "REALTIME_PING_INTERVAL_S": "9"}, 1500, 20_000),
    ],
)
def test_the_heartbeat_is_set_in_milliseconds_or_whole_seconds(
    env: dict[str, str], interval_ms: int, timeout_ms: int
) -> None:
    settings = Settings.from_env(env)
    assert (settings.ping_interval_ms, settings.ping_timeout_ms) == (interval_ms, timeout_ms)


def test_a_zero_heartbeat_is_refused() -> None:
    with pytest.raises(SettingsError, match="REALTIME_PING_INTERVAL_MS must be >= 1"):
        Settings.from_env({"REALTIME_PING_INTERVAL_MS": "0"})
