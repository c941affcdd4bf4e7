"""Extensions (`REALTIME_EXTENSIONS`, realtime/web/extensions.py) against real web and worker
processes: the worked example (`annotate`) end to end, and what python-socketio's users
expect of handlers they register (hyphenated names, acks, emits from a connect handler
after the CONNECT, refusals with a reason, namespaces, routes), behind the project's auth.
Binary packets are in tests/test_binary.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp.web import Application

from realtime.core import jsoncodec
from realtime.core.settings import Settings
from realtime.dev.embedded import RedisServer
from realtime.web.app import SIO, create_app
from realtime.web.extensions import (
    REALTIME,
    Extension,
    ExtensionError,
    PublishError,
    install,
    load,
    parse,
)
from realtime.web.namespace import TopicNamespace
from tests.helpers.clients import Collector
from tests.helpers.jsclient import JsClient, require_node
from tests.helpers.processes import RealtimeProcess, settings_env
from tests.helpers.stack import fresh_settings, running_stack
from tests.helpers.tokens import SECRET, hs256
from tests.test_raw_protocol import RawWebsocket, eio_url, parse_open

EXTENSIONS = "realtime.examples.annotate:setup,tests.helpers.ext_probe:setup"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def web(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealtimeProcess]:
    settings = fresh_settings(redis_server)
    with running_stack(
        settings,
        tmp_path_factory.mktemp("extensions"),
        REALTIME_EXTENSIONS=EXTENSIONS,
        REALTIME_JWT_SECRET=SECRET,
    ) as web:
        yield web


@pytest.fixture
async def clients() -> AsyncIterator[list[socketio.AsyncClient]]:
    """python-socketio clients, disconnected after the test."""
    made: list[socketio.AsyncClient] = []
    yield made
    for client in made:
        await client.disconnect()


def client(clients: list[socketio.AsyncClient]) -> socketio.AsyncClient:
    sio = socketio.AsyncClient(json=jsoncodec, handle_sigint=False)
    clients.append(sio)
    return sio


async def counts(web: RealtimeProcess) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(web.url + "/probe/counts") as response:
        assert response.status == 200
        result: dict[str, int] = await response.json()
        return result


async def refusal(sio: socketio.AsyncClient, web: RealtimeProcess, auth: Any) -> Any:
    """What the client's `connect_error` said when the server refused it."""
    reasons: list[Any] = []
    sio.on("connect_error", reasons.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(web.url, auth=auth, retry=False)
    [reason] = reasons
    return reason


# -- the worked example, end to end ------------------------------------------------------


@pytest.mark.system
async def test_annotate_writes_an_annotation_that_subscribers_receive(
    web: RealtimeProcess, clients: list[socketio.AsyncClient]
) -> None:
    watcher = Collector("watcher")
    token = hs256(["notes.*"], sub="watcher")
    await watcher.client.connect(web.url, auth={"token": token}, wait_timeout=10)
    try:
        assert (await watcher.subscribe("notes.deploys"))["ok"]
        annotator = client(clients)
        await annotator.connect(web.url, auth={"token": hs256(["notes.*"], sub="ana")})

        ack = await annotator.call("annotate", {"topic": "notes.deploys", "text": "deploy v42"})
        assert ack["ok"] is True, ack
        assert ack["topic"] == "notes.deploys"
        [event] = await watcher.wait_for(1)
        assert event["topic"] == "notes.deploys"
        assert event["data"] == {"annotation": "deploy v42", "by": "ana"}

        # The token's topics decide, as for subscribe; the schema answers field errors.
        refused = await annotator.call("annotate", {"topic": "billing.x", "text": "no"})
        assert refused["ok"] is False
        assert refused["error"]["code"] == "forbidden"
        invalid = await annotator.call("annotate", {"topic": "Bad Topic", "text": ""})
        assert invalid["error"]["code"] == "invalid"
        assert set(invalid["error"]["fields"]) == {"topic", "text"}
        assert annotator.connected
        assert len(watcher.events) == 1  # nothing refused was written
    finally:
        await watcher.close()


# -- python-socketio's API, as its users expect it -----------------------------------------


@pytest.mark.system
async def test_hyphenated_events_acks_and_unknown_events(
    web: RealtimeProcess, clients: list[socketio.AsyncClient]
) -> None:
    sio = client(clients)
    await sio.connect(web.url, auth={"token": hs256()})
    assert await sio.call("hyphen-ated", {"a": 1}) == {"got": [{"a": 1}]}
    # A tuple returned is an ack of several arguments.
    answers: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
    await sio.emit("pair", (1, "two"), callback=lambda *a: answers.set_result(a))
    assert await asyncio.wait_for(answers, 10) == ("two", 1)
    unknown = await sio.call("no-such-event", {})
    assert unknown["error"]["code"] == "invalid"
    # A handler that fails still answers (and the connection stays).
    failed = await sio.call("boom", {})
    assert failed["error"]["code"] == "internal"
    # The project's own events are still its own.
    ack = await sio.call("subscribe", {"topic": "metrics.cpu"})
    assert ack["ok"] is True


@pytest.mark.system
async def test_an_emit_from_a_connect_handler_arrives_after_the_connect(
    web: RealtimeProcess,
) -> None:
    """On the wire: CONNECT (`40{...}`) first, then what the handler emitted, with the
    token's claims read from the session."""
    async with aiohttp.ClientSession() as http, http.ws_connect(eio_url(web, "websocket")) as ws:
        raw = RawWebsocket(ws)
        parse_open(await raw.recv())
        await raw.send("40" + json.dumps({"token": hs256(["metrics.*"], sub="raw-user")}))
        first = await raw.recv()
        assert first.startswith("40{"), first
        second = await raw.recv()
        assert json.loads(second[2:]) == [
            "welcome",
            {"sub": "raw-user", "topics": ["metrics.*"]},
        ]


@pytest.mark.system
async def test_refusals_the_projects_auth_first_then_the_extensions_reason(
    web: RealtimeProcess, clients: list[socketio.AsyncClient]
) -> None:
    before = await counts(web)
    # A bad token is refused by the server: the extension's connect handler never runs.
    assert await refusal(client(clients), web, {"token": "nope"}) == {
        "message": "The token is malformed.",
        "data": {"code": "unauthorized"},
    }
    assert (await counts(web))["connects"] == before["connects"]

    reason = await refusal(client(clients), web, {"token": hs256(), "refuse": "closed for lunch"})
    assert reason == {"message": "closed for lunch"}
    # A connect handler that fails is a refusal too, never a CONNECT left unanswered.
    failed = await refusal(client(clients), web, {"token": hs256(), "boom": True})
    assert failed["data"] == {"code": "internal"}
    assert (await counts(web))["connects"] == before["connects"] + 2

    # A client it accepts is served as usual, and its disconnect reaches the extension.
    accepted = client(clients)
    await accepted.connect(web.url, auth={"token": hs256()})
    assert (await accepted.call("subscribe", {"topic": "metrics.x"}))["ok"]
    await accepted.disconnect()
    deadline = asyncio.get_running_loop().time() + 10
    while (await counts(web))["disconnects"] == before["disconnects"]:
        assert asyncio.get_running_loop().time() < deadline, "no disconnect reached the extension"
        await asyncio.sleep(0.05)


@pytest.mark.system
async def test_an_extension_namespace_needs_a_token_and_has_its_claims(
    web: RealtimeProcess, clients: list[socketio.AsyncClient]
) -> None:
    sio = client(clients)
    hello: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    sio.on("hello", hello.set_result, namespace="/chat")
    await sio.connect(web.url, namespaces=["/", "/chat"], auth={"token": hs256(sub="chatty")})
    assert await asyncio.wait_for(hello, 10) == {"sub": "chatty"}
    assert await sio.call("say", "hi", namespace="/chat") == ("heard", "hi")

    outsider = client(clients)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await outsider.connect(web.url, namespaces=["/chat"], auth={}, retry=False)


@pytest.mark.system
async def test_an_extension_namespace_ends_when_its_token_expires(
    web: RealtimeProcess, clients: list[socketio.AsyncClient]
) -> None:
    """As `/` does: a `closing` naming the reason, then the namespace's disconnect."""
    sio = client(clients)
    loop = asyncio.get_running_loop()
    closing: asyncio.Future[Any] = loop.create_future()
    gone: asyncio.Future[Any] = loop.create_future()
    sio.on("closing", lambda data: closing.done() or closing.set_result(data), namespace="/chat")
    sio.on("disconnect", lambda *_: gone.done() or gone.set_result(True), namespace="/chat")
    await sio.connect(web.url, namespaces=["/chat"], auth={"token": hs256(ttl_s=2)})
    assert (await asyncio.wait_for(closing, 20))["code"] == "token_expired"
    await asyncio.wait_for(gone, 20)
    assert "/chat" not in sio.namespaces


# -- loading: one-line errors ------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "is not of the form pkg.module:callable"),
        ("a.b:", "is not of the form"),
        ("a b:c", "is not of the form"),
        ("nowhere_such_module:setup", "cannot import nowhere_such_module: ModuleNotFoundError"),
        ("tests.helpers.ext_probe:missing", "tests.helpers.ext_probe has no missing"),
        ("tests.helpers.ext_probe:CHAT", "is not callable"),
    ],
)
def test_load_errors_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(ExtensionError, match=message) as caught:
        load((spec,))
    assert "\n" not in str(caught.value)


@pytest.mark.unit
def test_parse_and_load() -> None:
    assert parse("pkg.module:setup") == ("pkg.module", "setup")
    assert parse("pkg:Class.method") == ("pkg", "Class.method")
    [extension] = load(("tests.helpers.ext_probe:setup",))
    assert extension.name == "tests.helpers.ext_probe:setup"
    assert callable(extension.setup)


def _takes_subscribe(sio: socketio.AsyncServer, app: Application) -> None:
    sio.on("subscribe", lambda sid, data: None)


def _fails(sio: socketio.AsyncServer, app: Application) -> None:
    raise RuntimeError("no database")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("setup", "message"),
    [(_takes_subscribe, "registers subscribe on /"), (_fails, "failed: RuntimeError: no database")],
)
def test_setup_errors(setup: Any, message: str) -> None:
    app = create_app(Settings(insecure=True))  # no I/O until it serves
    sio = app[SIO]
    topics = sio.first["/"]
    assert isinstance(topics, TopicNamespace)
    with pytest.raises(ExtensionError, match=message):
        install([Extension("x:setup", setup)], sio, app, topics)


@pytest.mark.integration
@pytest.mark.parametrize("command", ["serve", "dev"])
def test_a_missing_extension_stops_the_command_with_exit_2(
    command: str, settings: Any, tmp_path: Path
) -> None:
    env = settings_env(settings, REALTIME_EXTENSIONS="tests.helpers.ext_probe:nothing")
    result = subprocess.run(
        [sys.executable, "-m", "realtime", command, "--port", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"realtime {command}: configuration error: "
        "REALTIME_EXTENSIONS: tests.helpers.ext_probe has no nothing"
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("topic", "data", "code", "fields"),
    [
        ("Bad Topic", {"v": 1}, "invalid", {"topic"}),
        ("notes.x", {"v": 2**70}, "invalid", {"data"}),  # not storable exactly
        ("notes.x", {"v": b"bytes"}, "invalid", None),  # not JSON
        ("notes.x", {"v": "x" * 2000}, "too_large", {"data"}),
    ],
)
async def test_publish_is_checked_as_http_ingest_checks(
    topic: str, data: dict[str, Any], code: str, fields: set[str] | None
) -> None:
    """Refused before anything is written (no Redis runs here)."""
    app = create_app(Settings(insecure=True, max_event_bytes=1024))
    with pytest.raises(PublishError) as refused:
        await app[REALTIME].publish(topic, data)
    assert refused.value.code == code
    assert (set(refused.value.fields) if refused.value.fields else None) == fields
    ack = refused.value.ack()
    assert ack["ok"] is False
    assert ack["error"]["code"] == code


@pytest.mark.system
async def test_socket_io_js_client_gets_the_welcome_and_round_trips_binary(
    web: RealtimeProcess,
) -> None:
    """socket.io-client 4 (npm), as a browser app would use an extension: the connect
    handler's emit, a hyphenated event's ack, a Buffer to a handler and bytes back."""
    js = await JsClient(require_node(), "js-ext").start()
    try:
        options = {"auth": {"token": hs256(sub="js")}, "transports": ["websocket"]}
        result = await js.request("connect", url=web.url, options=options, anyEvent=True)
        assert result["connected"] is True, result
        await js.wait_until(lambda c: bool(c.of("any")), "the welcome")
        [welcome] = js.of("any")
        assert (welcome["name"], welcome["args"]) == (
            "welcome",
            [{"sub": "js", "topics": ["metrics.*"]}],
        )
        assert await js.emit("hyphen-ated", {"a": 1}) == {"got": [{"a": 1}]}
        blob = base64.b64encode(b"\x01\x02\x03").decode()
        ack = await js.request("emitBinary", event="echo-binary", base64=blob)
        assert ack == [[3], {"base64": base64.b64encode(b"\x03\x02\x01").decode()}]
    finally:
        await js.close()
