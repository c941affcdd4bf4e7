"""Structured logs: JSON lines, context fields (request id, client, topic, consumer), and
no secret in any line: unit tests of realtime/logs.py, the request-id middleware in the
app, and real processes against a Redis that has a password."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis import Redis

from realtime.core import logs
from realtime.core.settings import Settings
from realtime.dev.embedded import RedisServer, free_port
from realtime.web import request_id
from tests.helpers.clients import Collector
from tests.helpers.inprocess import running_app
from tests.helpers.processes import ProcessGroup, RealtimeProcess

PASSWORD = "Sekr1t-pa55@word/x:y"  # needs percent-encoding inside a URL
WRONG_PASSWORD = "Wr0ng-pa55-not-for-logs"
HEADER = request_id.HEADER
REQUIRED_KEYS = {"time", "level", "logger", "message"}


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Lines written by the `realtime` and `test` loggers through a JSON handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter(logs.Redactor(["topsecret"])))
    loggers = [logging.getLogger("realtime"), logging.getLogger("test")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield stream
    for logger in loggers:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def lines_of(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- formatting and redaction -------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("env", "ours", "theirs"),
    [
        ({}, logging.INFO, logging.WARNING),
        ({"REALTIME_LOG_LEVEL": "debug"}, logging.DEBUG, logging.WARNING),
        ({"REALTIME_LIBRARY_LOG_LEVEL": "info"}, logging.INFO, logging.INFO),
    ],
)
def test_the_log_level_is_ours_and_libraries_stay_at_warning(
    env: dict[str, str], ours: int, theirs: int
) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook)
    try:
        logs.setup(Settings.from_env(env), stream)
        for name in ("realtime.web.app", "processors.worker.process"):
            assert logging.getLogger(name).getEffectiveLevel() == ours
        # (python-socketio and engineio set their own loggers to ERROR; these set none.)
        for name in ("redis.asyncio.connection", "redis.cluster", "some.library"):
            assert logging.getLogger(name).getEffectiveLevel() == theirs
        logging.getLogger("redis.connection").debug("a library's debug line")
        logging.getLogger("realtime.web.app").info("our info line")
        assert ("a library's debug line" in stream.getvalue()) is False
        assert ("our info line" in stream.getvalue()) is (ours <= logging.INFO)
    finally:
        root.handlers[:], level, sys.excepthook = saved
        root.setLevel(level)
        for name in logs.OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.captureWarnings(False)


@pytest.mark.unit
def test_an_unknown_library_log_level_names_its_variable() -> None:
    with pytest.raises(ValueError, match="REALTIME_LIBRARY_LOG_LEVEL: unknown level 'LOUD'"):
        logs.setup(Settings.from_env({"REALTIME_LIBRARY_LOG_LEVEL": "loud"}), io.StringIO())


@pytest.mark.unit
def test_json_lines_have_the_fields_context_extras_and_traceback(captured: io.StringIO) -> None:
    log = logging.getLogger("test.json")
    with logs.log_context(client="abc", topic="metrics.cpu"):
        log.info("hello %s", "world", extra={"partition": 3})
    try:
        raise ValueError("boom with topsecret inside")
    except ValueError:
        log.exception("failed")
    first, second = lines_of(captured)
    assert first["message"] == "hello world"
    assert first["level"] == "INFO"
    assert first["logger"] == "test.json"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["time"]))
    assert (first["client"], first["topic"], first["partition"]) == ("abc", "metrics.cpu", 3)
    assert "client" not in second  # the context ended with the block
    assert "ValueError: boom with ***" in str(second["exc"])
    assert "topsecret" not in captured.getvalue()


@pytest.mark.unit
def test_plain_lines_append_the_context() -> None:
    formatter = logs.PlainFormatter(logs.Redactor())
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "lost %s", ("redis",), None)
    record.context = {"request_id": "r1"}
    assert formatter.format(record).endswith("WARNING x: lost redis [request_id=r1]")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:p%40ss@h:6380/0", "rediss://user:***@h:6380/0"),
        (
            "see redis+sentinel://:pw@s1:26379,s2:26379/mymaster now",
            "see redis+sentinel://:***@s1:26379,s2:26379/mymaster now",
        ),
        ("unix:///run/r.sock?db=0&password=pw", "unix:///run/r.sock?db=0&password=***"),
        (
            "redis://h:6379/0 and http://example.com/a:b@c",
            "redis://h:6379/0 and http://example.com/a:b@c",
        ),
        ("redis://user@h:6379/0", "redis://user@h:6379/0"),
    ],
)
def test_url_passwords_are_redacted(text: str, expected: str) -> None:
    assert logs.redact_url(text) == expected


@pytest.mark.unit
def test_every_secret_setting_is_redacted_in_both_url_forms() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": f"redis://:{quote(PASSWORD, safe='')}@h:1/0",
            "REALTIME_ADMIN_USER": "ops",
            "REALTIME_ADMIN_PASSWORD": "admin-pw-123",
        }
    )
    redact = logs.Redactor(settings.secret_values())
    text = f"{PASSWORD} {quote(PASSWORD, safe='')} admin-pw-123 ops"
    assert redact(text) == "*** *** *** ops"
    assert "admin-pw-123" not in repr(settings)


@pytest.mark.unit
async def test_each_task_keeps_its_own_context() -> None:
    seen: dict[str, object] = {}

    async def handler(name: str, started: asyncio.Event, other: asyncio.Event) -> None:
        with logs.log_context(client=name):
            started.set()
            await other.wait()  # both contexts are live at once
            seen[name] = logs.current_context().get("client")

    a, b = asyncio.Event(), asyncio.Event()
    await asyncio.gather(handler("a", a, b), handler("b", b, a))
    assert seen == {"a": "a", "b": "b"}
    assert "client" not in logs.current_context()


# -- request ids in the web app -------------------------------------------------------------


@pytest.mark.integration
async def test_request_id_is_honoured_generated_and_echoed(settings: Settings) -> None:
    async with running_app(settings) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/healthz", headers={HEADER: "lb-7f3a.1"}) as r:
            assert r.headers[HEADER] == "lb-7f3a.1"
        async with http.get(url + "/healthz") as r:
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers[HEADER])
        async with http.get(url + "/healthz", headers={HEADER: "x" * 500}) as r:
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers[HEADER])  # not an id: replaced
        async with http.get(url + "/no/such/page", headers={HEADER: "r-404"}) as r:
            assert (r.status, r.headers[HEADER]) == (404, "r-404")


@pytest.mark.integration
async def test_a_response_the_handler_prepares_itself_carries_the_id() -> None:
    """Websocket upgrades and streams are sent before the middleware returns."""

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"streamed")
        return response

    app = web.Application()
    app.router.add_get("/stream", stream)
    request_id.install(app)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            url = str(server.make_url("/stream"))
            async with http.get(url, headers={HEADER: "r-stream"}) as r:
                assert r.headers[HEADER] == "r-stream"
                assert await r.read() == b"streamed"
    finally:
        await server.close()


@pytest.mark.integration
async def test_a_request_logs_with_its_request_id(captured: io.StringIO, prefix: str) -> None:
    # Nothing listens on this port: ingest answers 503 and logs why.
    settings = Settings(
        redis_url=f"redis://:topsecret@127.0.0.1:{free_port()}/0",
        prefix=prefix,
        insecure=True,
        redis_timeout_s=1.0,
    )
    async with running_app(settings) as url, aiohttp.ClientSession() as http:
        event = {"topic": "metrics.cpu", "data": {"v": 1}}
        async with http.post(
            url + "/api/v1/events", json=event, headers={HEADER: "req-503"}
        ) as response:
            assert response.status == 503
            assert response.headers[HEADER] == "req-503"
    refused = [
        line for line in lines_of(captured) if str(line["message"]).startswith("ingest refused")
    ]
    assert refused
    assert refused[0]["request_id"] == "req-503"
    assert "topsecret" not in captured.getvalue()


# -- real processes -----------------------------------------------------------------------


def json_lines(proc: RealtimeProcess) -> list[dict[str, object]]:
    lines = []
    for raw in proc.log().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            pytest.fail(f"{proc.name} wrote a line that is not JSON: {raw!r}")
        assert isinstance(line, dict)
        assert line.keys() >= REQUIRED_KEYS, raw
        lines.append(line)
    assert lines, f"{proc.name} logged nothing"
    return lines


@pytest.mark.system
async def test_processes_log_json_with_context_and_never_a_password(
    own_redis: RedisServer, prefix: str, processes: ProcessGroup
) -> None:
    with Redis(port=own_redis.port) as admin:
        admin.config_set("requirepass", PASSWORD)
    url = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{own_redis.port}/0"
    settings = Settings(
        redis_url=url, prefix=prefix, insecure=True, block_ms=200, redis_timeout_s=2.0
    )
    json_debug = {"REALTIME_LOG_FORMAT": "json", "REALTIME_LOG_LEVEL": "DEBUG"}
    web = processes.web(settings, **json_debug)
    worker = processes.worker(settings, **json_debug)
    wrong_url = url.replace(quote(PASSWORD, safe=""), WRONG_PASSWORD)
    refused = processes.web(replace(settings, redis_url=wrong_url), ready=False, **json_debug)

    client = await Collector().connect(web.url)
    try:
        await client.subscribe("logs.check")
        async with aiohttp.ClientSession() as http:
            event = {"topic": "logs.check", "data": {"v": 1}}
            async with http.post(web.url + "/api/v1/events", json=event) as response:
                assert response.status == 202
            await client.wait_for(1)
            async with http.post(
                refused.url + "/api/v1/events",
                json=event,
                headers={HEADER: "req-refused"},
            ) as response:
                assert response.status == 503
    finally:
        await client.close()
    processes.stop_all()  # their last lines are written too

    web_lines, worker_lines, refused_lines = (json_lines(p) for p in (web, worker, refused))
    everything = "\n".join(p.log() for p in (web, worker, refused))
    for secret in (PASSWORD, quote(PASSWORD, safe=""), WRONG_PASSWORD):
        assert secret not in everything

    (listening,) = [line for line in web_lines if "web listening" in str(line["message"])]
    assert f"redis://:***@127.0.0.1:{own_redis.port}/0" in str(listening["message"])
    subscribed = [line for line in web_lines if str(line["message"]).startswith("subscribe")]
    assert subscribed
    assert subscribed[0]["topic"] == "logs.check"
    assert subscribed[0]["client"]
    # The fan-out listener outlives the request that started it: no request id of its own.
    assert all(
        "request_id" not in line
        for line in web_lines
        if line["logger"] == "realtime.fanout.manager"
    )
    assert all(line.get("consumer") for line in worker_lines)
    # Our own lines only: a library (redis-py 8 logs its connects at DEBUG) stays at WARNING.
    libraries = [
        line
        for line in web_lines + worker_lines + refused_lines
        if not str(line["logger"]).startswith(logs.OWN_LOGGERS)
    ]
    assert all(line["level"] in ("WARNING", "ERROR", "CRITICAL") for line in libraries)
    refusals = [line for line in refused_lines if line.get("request_id") == "req-refused"]
    assert refusals
    assert "ingest refused" in str(refusals[0]["message"])


@pytest.mark.unit
def test_library_lines_never_carry_a_session_id(caplog: pytest.LogCaptureFixture) -> None:
    """python-engineio writes "Invalid session <sid>" at ERROR once; aiohttp's access log
    writes request URLs; an Engine.IO sid is a bearer secret (docs/security.md)."""
    logs.hide_session_ids()
    sid = "J3K68SwOhN2_g27QAAAA"  # python-engineio's shape: 20 base64url characters
    for name in logs.SID_LOGGERS:  # whatever level an earlier test left them at
        caplog.set_level(logging.INFO, logger=name)
    logging.getLogger("engineio.server").error("Invalid session %s", sid)
    logging.getLogger("aiohttp.access").info('"GET /socket.io/?EIO=4&sid=%s HTTP/1.1" 400', sid)
    # (python-engineio and python-socketio set their loggers to ERROR when they are off)
    logging.getLogger("socketio.server").error("%s is entering room metrics.cpu [/]", sid)
    assert sid not in caplog.text
    assert caplog.text.count("<sid>") == 3
    assert "metrics.cpu" in caplog.text  # the rest of the line stays
