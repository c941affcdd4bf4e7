"""Unit tests: settings come from the environment once, with clear errors."""

from __future__ import annotations

import pytest

from realtime.settings import Settings, SettingsError, environment_variables

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
