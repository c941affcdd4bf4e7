"""Guard: every private or undocumented part of python-engineio, python-socketio and aiohttp
that realtime/, processors/ and bench/ override, patch, read or call, checked for the shape
we rely on (it exists; its parameters, in order; coroutine or not; what upstream calls).
An upstream release that changes one fails here, naming the internal, the installed
version and our code that depends on it, instead of failing on a user's server.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import importlib
import inspect
import logging
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import engineio
import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from engineio.async_drivers.aiohttp import translate_request
from engineio.async_socket import AsyncSocket
from socketio.async_pubsub_manager import AsyncPubSubManager

from bench.rooms import IndexedManager
from realtime.core.keys import NAMESPACE, UPDATE_EVENT
from realtime.core.wire import update_message
from realtime.fanout.manager import FanoutManager, _is_update
from realtime.fanout.sharded import ShardedFanoutManager
from realtime.transport.connection import _HandedOver
from realtime.transport.engine import EngineServer, EngineSocket
from realtime.transport.server import SocketServer
from realtime.transport.timers import DelayQueue
from realtime.web.admin import same_origins
from realtime.web.namespace import TopicNamespace

pytestmark = pytest.mark.unit

_LOG = logging.getLogger(__name__)  # a logger object: the servers then add no handler
_DISTRIBUTIONS = {
    "engineio": "python-engineio",
    "socketio": "python-socketio",
    "aiohttp": "aiohttp",
}
_ANY = object()


# -- what an entry expects --------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A callable with these parameters, in this order (space-separated; "*args" and
    "**kwargs" for varargs). `exact`: we override it, so upstream calls it with exactly
    these; otherwise we call it: these must be among its parameters, in order, and the
    others optional."""

    params: str
    coroutine: bool
    exact: bool = False


def coro(params: str, *, exact: bool = False) -> Method:
    return Method(params, coroutine=True, exact=exact)


def func(params: str, *, exact: bool = False) -> Method:
    return Method(params, coroutine=False, exact=exact)


@dataclass(frozen=True)
class Attr:
    """An attribute of the class or module (a property, slot, constant, class)."""

    settable: bool = False
    value: object = _ANY


@dataclass(frozen=True)
class OnInstance:
    """An attribute set in `__init__`: checked on an instance made cheaply (INSTANCES)."""

    type_: type | tuple[type, ...] | None = None
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refers:
    """Upstream code that still names these (space-separated: attributes, globals, string
    constants). `only_prefix`: and no other name with that prefix ("" for any), since our
    copy of its logic would miss it."""

    names: str
    only_prefix: str | None = None


Expect = Method | Attr | OnInstance | Refers


@dataclass(frozen=True)
class Internal:
    owner: str  # dotted: a module, or module.Class[.attribute]
    name: str
    expect: Expect
    where: str  # our code that relies on it

    @property
    def id(self) -> str:
        return f"{self.owner}.{self.name}:{type(self.expect).__name__}"


def uses(owner: str, where: str, **expects: Expect) -> list[Internal]:
    return [Internal(owner, name, expect, where) for name, expect in expects.items()]


def _engine() -> engineio.AsyncServer:
    return engineio.AsyncServer(async_mode="aiohttp", logger=_LOG, monitor_clients=False)


INSTANCES: dict[str, Callable[[], Any]] = {
    "engineio.AsyncServer": _engine,
    "engineio.async_socket.AsyncSocket": lambda: AsyncSocket(_engine(), "sid"),
    "socketio.AsyncServer": lambda: socketio.AsyncServer(
        async_mode="aiohttp", logger=_LOG, engineio_logger=_LOG
    ),
    "socketio.AsyncManager": socketio.AsyncManager,
    "socketio.AsyncRedisManager": socketio.AsyncRedisManager,  # connects on first use only
    "socketio.AsyncNamespace": lambda: socketio.AsyncNamespace("/"),
    "aiohttp.web.StreamResponse": web.StreamResponse,
    "socketio.packet.Packet": lambda: socketio.packet.Packet(encoded_packet='51-["e",1]'),
}


@functools.cache
def instance(owner: str) -> Any:
    return INSTANCES[owner]()


# -- the table ----------------------------------------------------------------------------

SOCKET = "engineio.async_socket.AsyncSocket"
ENGINE = "engineio.AsyncServer"
SERVER = "socketio.AsyncServer"
MANAGER = "socketio.AsyncManager"
REDIS_MANAGER = "socketio.AsyncRedisManager"
HANDLER = "aiohttp.web_protocol.RequestHandler"
REQUEST = "aiohttp.web_request.BaseRequest"
WEBSOCKET = "aiohttp.web.WebSocketResponse"

_ES = "realtime/transport/engine.py EngineSocket"
_UPGRADE = f"{_ES}._upgrade_websocket (reached as getattr(self, '_upgrade_' + transport))"
_SS = "realtime/transport/server.py SocketServer"
_DISPATCH = "realtime/transport/dispatch.py ExtensibleServer"
_ROOMS = "realtime/fanout/rooms.py RoomIndex (and bench/rooms.py IndexedManager)"
_FANOUT = "realtime/fanout/manager.py FanoutManager"
_DEFLATE = (
    "realtime/transport/outbox.py Outbox with permessage-deflate (aiohttp's protocol, websocket)"
)
_TAKE_OVER = "realtime/transport/connection.py take_over"

INTERNALS: list[Internal] = [
    # python-engineio: the socket that EngineServer adopts as an EngineSocket
    *uses(
        SOCKET,
        f"{_ES} (overrides)",
        send=coro("self pkt", exact=True),
        poll=coro("self", exact=True),
        close=coro("self wait abort reason", exact=True),
    ),
    *uses(
        SOCKET,
        f"{_ES}.schedule_ping (override; upstream calls it on connect and on each PONG)",
        schedule_ping=func("self", exact=True),
    ),
    *uses(
        SOCKET,
        _UPGRADE,
        _upgrade_websocket=coro("self environ", exact=True),
        handle_get_request=Refers("_upgrade_"),
        upgrade_protocols=Attr(value=["websocket"]),
    ),
    *uses(SOCKET, f"{_ES}._receive_one", receive=coro("self pkt")),
    *uses(SOCKET, f"{_ES}.send", check_ping_timeout=coro("self")),
    *uses(
        SOCKET,
        f"{_ES} (put_nowait, qsize, ...; let go on websockets)",
        queue=OnInstance(asyncio.Queue),
    ),
    *uses(
        SOCKET,
        f"{_ES}; {_SS}.drop_connection, open_connections, _handle_eio_disconnect",
        server=OnInstance(),
        sid=OnInstance(str),
        last_ping=OnInstance(),
        connected=OnInstance(bool),
        upgrading=OnInstance(bool),
        upgraded=OnInstance(bool),
        closing=OnInstance(bool),
        closed=OnInstance(bool),
    ),
    # python-engineio: the server
    *uses(
        ENGINE,
        "realtime/transport/engine.py EngineServer._trigger_event "
        "(override: adopts sockets on 'connect')",
        _trigger_event=coro("self event *args **kwargs", exact=True),
    ),
    *uses(
        ENGINE,
        "realtime/transport/engine.py (session_for), transport/server.py (eio sid -> socket: "
        "writer)",
        sockets=OnInstance(dict),
    ),
    *uses(
        ENGINE,
        "realtime/transport/server.py SocketServer (replaced per instance: POST bodies checked; "
        "REMOTE_ADDR and wsgi.url_scheme the client's, read by the origin check and 'connect')",
        _async=OnInstance(dict, keys=("translate_request",)),
    ),
    *uses(
        ENGINE,
        "realtime/transport/engine.py EngineServer._service_task (override: a sweep of "
        "every socket per half ping timeout; upstream starts it on the first connect and "
        "stops it in shutdown through service_task_event)",
        _service_task=coro("self", exact=True),
        _handle_connect=Refers("_service_task start_service_task"),
        shutdown=Refers("service_task_event service_task_handle"),
        service_task_event=OnInstance(),
        ping_timeout=OnInstance((int, float)),
    ),
    *uses(ENGINE, _UPGRADE, max_http_buffer_size=OnInstance(int)),
    *uses(
        f"{ENGINE}.reason",
        "realtime/web/app.py oversized_polling (ends the session it refuses)",
        TRANSPORT_ERROR=Attr(),
    ),
    *uses(ENGINE, f"{_ES}.schedule_ping", ping_interval=OnInstance((int, float))),
    *uses(ENGINE, f"{_ES}._receive_one", logger=OnInstance(logging.Logger)),
    *uses(
        f"{ENGINE}.reason",
        f"{_SS}._handle_eio_disconnect, _close_engine; {_ES}._transport_closed",
        CLIENT_DISCONNECT=Attr(),
        SERVER_DISCONNECT=Attr(),
        TRANSPORT_CLOSE=Attr(),
    ),
    *uses(
        "engineio.async_drivers.aiohttp",
        "realtime/transport/inbound.py guard_translate_request (wraps it in a plain function)",
        translate_request=func("request"),
    ),
    *uses(
        "engineio.packet.Packet",
        "realtime/transport/engine.py (Packet(type, data=...), Packet(encoded_packet=...))",
        __init__=func("self packet_type data encoded_packet"),
    ),
    *uses(
        "engineio.packet",
        "realtime/transport/frames.py, realtime/transport/inbound.py "
        "(packet types written as digits)",
        CLOSE=Attr(value=1),
        PING=Attr(value=2),
        PONG=Attr(value=3),
        MESSAGE=Attr(value=4),
        UPGRADE=Attr(value=5),
        NOOP=Attr(value=6),
    ),
    *uses(
        "engineio.exceptions",
        f"{_ES}._receive_one (caught)",
        UnknownPacketError=Attr(),
        SocketIsClosedError=Attr(),
    ),
    # python-socketio: the server
    *uses(
        SERVER,
        f"{_SS} and {_DISPATCH} (overrides)",
        _engineio_server_class=func("self", exact=True),
        _trigger_event=coro("self event namespace *args", exact=True),
        _handle_eio_connect=coro("self eio_sid environ", exact=True),
        _handle_eio_message=coro("self eio_sid data", exact=True),
        _handle_eio_disconnect=coro("self eio_sid reason", exact=True),
        _handle_connect=coro("self eio_sid namespace data", exact=True),
        _send_packet=coro("self eio_sid pkt", exact=True),
        _send_eio_packet=coro("self eio_sid eio_pkt", exact=True),
        handlers=OnInstance(dict),
        namespace_handlers=OnInstance(dict),
    ),
    *uses(
        SERVER,
        f"{_DISPATCH}.handlers_event (python-socketio's own dispatch, after the project's)",
        _trigger_event=coro("self event namespace *args"),
        not_handled=OnInstance(),
        save_session=coro("self sid session namespace"),
    ),
    *uses(
        SERVER,
        f"{_DISPATCH}._handle_connect holds packets until CONNECT (what upstream sends them with)",
        _handle_connect=Refers("_send_packet _trigger_event"),
    ),
    *uses(
        MANAGER,
        f"{_DISPATCH}._send_eio_packet (an emit without callback reaches clients through it)",
        emit=Refers("_send_eio_packet _send_packet"),
    ),
    *uses(
        SERVER,
        f"{_SS}._handle_eio_message: binary packets awaiting attachments",
        _binary_packet=OnInstance(dict),
        _handle_eio_message=Refers("_binary_packet add_attachment"),
    ),
    *uses(
        "socketio.packet.Packet",
        "realtime/transport/inbound.py _binary_problem, SocketServer (attachments)",
        attachment_count=OnInstance(int),
        attachments=OnInstance(list),
    ),
    *uses(
        SERVER,
        f"{_SS}._serves (the namespaces a CONNECT may name, as _handle_connect decides)",
        _handle_connect=Refers("handlers namespace_handlers namespaces"),
    ),
    *uses(
        SERVER,
        f"{_SS}._handle_connect connect_checks (awaited before python-socketio pre-connects "
        "the client into the namespace's rooms; the gate gets self.environ[eio_sid])",
        _handle_connect=Refers("pre_connect environ"),
    ),
    *uses(
        ENGINE,
        "realtime/transport/engine.py EngineServer.handle_request (override: 400s first)",
        handle_request=coro("self *args **kwargs", exact=True),
    ),
    *uses(
        SERVER,
        f"{_SS}._handle_eio_connect (initializes the manager first) and __init__ (self.environ"
        " replaced by realtime/transport/environ.py Environs, which packs what is stored in it)",
        _handle_eio_connect=Refers("manager_initialized environ"),
        get_environ=Refers("environ"),
        manager_initialized=OnInstance(bool),
        environ=OnInstance(dict),
    ),
    *uses(SERVER, "realtime/ (sio.eio, everywhere)", eio=OnInstance(engineio.AsyncServer)),
    *uses(
        SERVER,
        f"{_SS}._handle_eio_message -> realtime/transport/inbound.py malformed",
        packet_class=OnInstance(type),
    ),
    *uses(
        "socketio.packet.Packet",
        "realtime/transport/inbound.py malformed (packet_class(encoded_packet=data))",
        __init__=func("self encoded_packet"),
    ),
    *uses(
        "socketio.packet.Packet",
        "realtime/transport/server.py Packet.data_is_binary (override, as a classmethod)",
        data_is_binary=func("data", exact=True),
        __init__=Refers("data_is_binary"),
    ),
    *uses(
        "socketio.base_server.BaseServer",
        "realtime/transport/server.py SocketServer.__init__ (serializer=Packet, a class)",
        __init__=func("self serializer json"),
    ),
    *uses(
        "socketio.AsyncNamespace",
        "realtime/web/namespace.py TopicNamespace.trigger_event (override)",
        trigger_event=coro("self event *args", exact=True),
    ),
    # python-socketio: the client manager's room registry
    *uses(
        MANAGER,
        f"{_ROOMS} (overrides)",
        basic_enter_room=func("self sid namespace room eio_sid", exact=True),
        basic_leave_room=func("self sid namespace room", exact=True),
        basic_disconnect=func("self sid namespace **kwargs", exact=True),
        get_rooms=func("self sid namespace", exact=True),
        get_participants=func("self namespace room", exact=True),
        rooms=OnInstance(dict),
        callbacks=OnInstance(dict),
        pending_connect=OnInstance(dict),
        pending_disconnect=OnInstance(dict),
    ),
    *uses(
        MANAGER,
        "realtime/fanout/rooms.py RoomIndex.basic_disconnect (a copy of it, with the room index)",
        basic_disconnect=Refers(
            "rooms callbacks pending_connect pending_disconnect basic_leave_room"
            " append copy items len remove",
            only_prefix="",
        ),
    ),
    *uses(
        MANAGER,
        f"{_SS}._handle_eio_connect, drop, _in_a_namespace; realtime/delivery/hub.py",
        initialize=func("self"),
        sid_from_eio_sid=func("self eio_sid namespace"),
        eio_sid_from_sid=func("self sid namespace"),
        get_participants=func("self namespace room"),
    ),
    # python-socketio: its Redis pub/sub manager, subclassed at the transport seam
    *uses(
        REDIS_MANAGER,
        f"{_FANOUT} (overrides; _publish in realtime/fanout/sharded.py too)",
        _publish=coro("self data", exact=True),
        _handle_emit=coro("self message", exact=True),
        _thread=coro("self", exact=True),
    ),
    *uses(
        REDIS_MANAGER,
        f"{_FANOUT}._thread, aclose (upstream starts self._thread, keeps it in self.thread)",
        initialize=Refers("_thread thread start_background_task"),
    ),
    *uses(
        REDIS_MANAGER,
        f"{_FANOUT}._dispatch (dispatches as upstream's listener does)",
        _thread=Refers(
            "_handle_callback _handle_emit _handle_disconnect _handle_enter_room"
            " _handle_leave_room _handle_close_room",
            only_prefix="_handle_",
        ),
        _handle_callback=coro("self message"),
        _handle_disconnect=coro("self message"),
        _handle_enter_room=coro("self message"),
        _handle_leave_room=coro("self message"),
        _handle_close_room=coro("self message"),
        json=OnInstance(),
    ),
    *uses(
        REDIS_MANAGER,
        _FANOUT,
        channel=OnInstance(str),
        write_only=OnInstance(bool),
        host_id=OnInstance(str),
    ),
    # python-socketio: what the Admin UI's server side (realtime/web/admin.py) reads and calls
    *uses(
        SERVER,
        "realtime/web/admin.py AdminUI.server_stats (every namespace, `/` included)",
        handlers=OnInstance(dict),
        namespace_handlers=OnInstance(dict),
    ),
    *uses(
        SERVER,
        "realtime/web/admin.py AdminUI._send_queued (to a local admin, not through the fan-out)",
        emit=coro("self event data to room skip_sid namespace callback ignore_queue"),
    ),
    *uses(
        SERVER,
        f"{_SS}._trigger_event (a disconnect's reason: args[1], for the Admin UI)",
        _handle_disconnect=Refers("_trigger_event reason"),
    ),
    *uses(
        MANAGER,
        "realtime/web/admin.py AdminUI._welcome (waits for the admin's connect to complete)",
        is_connected=func("self sid namespace"),
    ),
    # aiohttp: the request handler a websocket's transport is taken from
    *uses(
        HANDLER,
        f"{_TAKE_OVER} (handler.transport = None; connection_lost once its task is done)",
        transport=Attr(settable=True),
        connection_lost=func("self exc"),
    ),
    *uses(HANDLER, _DEFLATE, writing_paused=Attr(), _drain_helper=coro("self")),
    *uses(
        HANDLER,
        "realtime/web/app.py server_options (keepalive_timeout also closes a connection whose"
        " request headers never complete: the keep-alive check closes one that waits)",
        keepalive_timeout=Attr(),
        _process_keepalive=Refers("_waiter force_close"),
        connection_made=Refers("_keepalive_timeout _process_keepalive"),
    ),
    *uses(
        HANDLER,
        "realtime/core/logs.py MalformedHttpFilter (the record it rewrites: an unparseable"
        " request is logged through log_exception with the peer as the one argument)",
        handle_error=Refers("log_exception"),
        data_received=Refers("HttpProcessingError"),
    ),
    *uses(
        "aiohttp.http_exceptions.HttpProcessingError",
        "realtime/core/logs.py MalformedHttpFilter",
        code=Attr(),
        message=Attr(),
    ),
    *uses(
        REQUEST,
        f"{_TAKE_OVER}; realtime/transport/engine.py EngineSocket._serve_deflate_websocket",
        protocol=Attr(),
        task=Attr(),
    ),
    *uses(
        "aiohttp.web.StreamResponse",
        "realtime/transport/connection.py _HandedOver.write_eof (override)",
        write_eof=coro("self data", exact=True),
    ),
    *uses(
        WEBSOCKET,
        f"{_DEFLATE}; {_ES}._probe, _close_link",
        send_frame=coro("self message opcode compress"),
        close=coro("self code message drain"),
        compress=Attr(),
    ),
]


# -- the checker --------------------------------------------------------------------------


def blame(upstream: str, problem: str, where: str) -> str:
    """The failure message: the internal, the installed release, and who depends on it."""
    distribution = _DISTRIBUTIONS[upstream.split(".")[0]]
    return (
        f"{upstream} ({distribution} {version(distribution)}): {problem}.\n"
        f"  We rely on it in: {where}"
    )


def resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for part in parts[end:]:
            found = getattr(found, part)
        return found
    raise ImportError(f"cannot import {dotted}")


def _params(target: Any) -> tuple[str, ...]:
    marks: dict[Any, str] = {
        inspect.Parameter.VAR_POSITIONAL: "*",
        inspect.Parameter.VAR_KEYWORD: "**",
    }
    parameters = inspect.signature(target).parameters.values()
    return tuple(marks.get(p.kind, "") + p.name for p in parameters)


def _method_problem(target: Any, expect: Method) -> str | None:
    if not callable(target):
        return f"is a {type(target).__name__}, not callable"
    params = _params(target)
    wanted = tuple(expect.params.split())
    shown = f"({', '.join(params)})"
    if inspect.iscoroutinefunction(target) != expect.coroutine:
        return f"is {'not ' if expect.coroutine else ''}a coroutine function now {shown}"
    if expect.exact:
        if params != wanted:
            return f"takes {shown}, our override takes ({', '.join(wanted)})"
        return None
    remaining = iter(params)
    if not all(name in remaining for name in wanted):  # in order
        return f"takes {shown}, we pass ({', '.join(wanted)})"
    required = [
        p.name
        for p in inspect.signature(target).parameters.values()
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in wanted
    ]
    if required:
        return f"takes {shown}: it now requires {', '.join(required)}, which we do not pass"
    return None


def _code_names(target: Any) -> tuple[set[str], set[str]]:
    """(attribute and global names, string constants) of a function and its inner code."""
    names: set[str] = set()
    strings: set[str] = set()
    stack = [inspect.unwrap(target).__code__]
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        for const in code.co_consts:
            if isinstance(const, str):
                strings.add(const)
            elif isinstance(const, types.CodeType):
                stack.append(const)
    return names, strings


def _refers_problem(target: Any, expect: Refers) -> str | None:
    names, strings = _code_names(target)
    wanted = set(expect.names.split())
    gone = sorted(wanted - names - strings)
    if gone:
        return f"no longer refers to {', '.join(gone)}"
    if expect.only_prefix is not None:
        new = sorted(n for n in names if n.startswith(expect.only_prefix) and n not in wanted)
        if new:
            return f"now also refers to {', '.join(new)}, which our copy of its logic does not"
    return None


def _settable(static: Any) -> bool:
    if isinstance(static, property):
        return static.fset is not None
    kind = type(static)
    return hasattr(kind, "__set__") or not hasattr(kind, "__get__")


def _problem(entry: Internal) -> str | None:
    expect = entry.expect
    try:
        owner = resolve(entry.owner)
    except (ImportError, AttributeError) as exc:
        return f"{entry.owner} is gone ({exc})"
    if isinstance(expect, OnInstance):
        made = instance(entry.owner)
        if not hasattr(made, entry.name):
            return f"is not set on a new {entry.owner} (no longer in its __init__?)"
        value = getattr(made, entry.name)
        if expect.type_ is not None and not isinstance(value, expect.type_):
            return f"is a {type(value).__name__} now, not a {expect.type_}"
        missing = [key for key in expect.keys if key not in value]
        return f"has no {', '.join(missing)} any more" if missing else None
    try:
        static = inspect.getattr_static(owner, entry.name)
    except AttributeError:
        return "is missing"
    if isinstance(expect, Attr):
        if expect.settable and not _settable(static):
            return "can no longer be assigned"
        value = getattr(owner, entry.name)
        if expect.value is not _ANY and value != expect.value:
            return f"is {value!r}, we rely on {expect.value!r}"
        return None
    target = getattr(owner, entry.name)
    if isinstance(expect, Method):
        return _method_problem(target, expect)
    return _refers_problem(target, expect)


def check(entry: Internal) -> str | None:
    """None if the internal is as we rely on it, else the failure message."""
    problem = _problem(entry)
    return None if problem is None else blame(f"{entry.owner}.{entry.name}", problem, entry.where)


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("entry", INTERNALS, ids=lambda entry: entry.id)
def test_upstream_internal_is_as_we_rely_on_it(entry: Internal) -> None:
    message = check(entry)
    assert message is None, message


BROKEN = [
    Internal(SERVER, "_no_such_thing", coro("self"), "nowhere (a deliberately wrong entry)"),
    Internal(SERVER, "_handle_eio_disconnect", coro("self eio_sid", exact=True), "nowhere"),
    Internal(SOCKET, "schedule_ping", coro("self", exact=True), "nowhere"),
    Internal(MANAGER, "get_participants", func("self room namespace"), "nowhere"),
    Internal(MANAGER, "get_participants", func("self namespace"), "nowhere"),
    Internal(ENGINE, "_no_such_attribute", OnInstance(), "nowhere"),
    Internal(ENGINE, "sockets", OnInstance(list), "nowhere"),
    Internal(ENGINE, "_async", OnInstance(dict, keys=("no_such_key",)), "nowhere"),
    Internal(REQUEST, "protocol", Attr(settable=True), "nowhere"),
    Internal("engineio.packet", "MESSAGE", Attr(value=9), "nowhere"),
    Internal(REDIS_MANAGER, "initialize", Refers("_no_such_name"), "nowhere"),
    Internal(MANAGER, "basic_disconnect", Refers("rooms", only_prefix="pending"), "nowhere"),
    Internal("socketio.no_such_module.Thing", "x", Attr(), "nowhere"),
]


@pytest.mark.parametrize("entry", BROKEN, ids=lambda entry: entry.id)
def test_the_checker_reports_an_entry_upstream_does_not_match(entry: Internal) -> None:
    message = check(entry)
    assert message is not None, f"{entry.id} should have been reported"
    distribution = _DISTRIBUTIONS[entry.owner.split(".")[0]]
    for part in (f"{entry.owner}.{entry.name}", f"{distribution} {version(distribution)}"):
        assert part in message
    assert message.endswith(entry.where)


def test_the_checker_notices_an_upstream_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real table entries, against an upstream changed under them."""
    by_id = {entry.id: entry for entry in INTERNALS}
    upgrade = by_id[f"{SOCKET}._upgrade_websocket:Method"]
    disconnect = by_id[f"{SERVER}._handle_eio_disconnect:Method"]
    assert check(upgrade) is None
    assert check(disconnect) is None

    async def without_reason(self: Any, eio_sid: str) -> None:
        pass

    monkeypatch.delattr(AsyncSocket, "_upgrade_websocket")
    monkeypatch.setattr(socketio.AsyncServer, "_handle_eio_disconnect", without_reason)
    assert "is missing" in (check(upgrade) or "")
    assert "takes (self, eio_sid)" in (check(disconnect) or "")


def test_an_engineio_socket_can_become_an_engine_socket() -> None:
    where = (
        "realtime/transport/engine.py EngineServer._trigger_event (socket.__class__ = EngineSocket)"
    )
    socket = AsyncSocket(_engine(), "sid")
    assert issubclass(EngineSocket, AsyncSocket), blame(SOCKET, "is no longer our base", where)
    assert "__slots__" not in vars(EngineSocket), f"{where}: EngineSocket must not add __slots__"
    assert hasattr(socket, "__dict__"), blame(SOCKET, "has __slots__ now (no __dict__)", where)
    try:
        socket.__class__ = EngineSocket
    except TypeError as exc:
        pytest.fail(blame(SOCKET, f"instances cannot become EngineSockets ({exc})", where))
    defaults = [n for n, v in vars(EngineSocket).items() if not callable(v) and n[:2] != "__"]
    hidden = sorted(name for name in defaults if name in vars(socket))
    assert not hidden, blame(
        SOCKET, f"instances set {hidden}, hiding EngineSocket's defaults", where
    )


async def test_engineio_hands_each_new_socket_to_engine_server_to_adopt() -> None:
    """A polling handshake through the real request path: the driver's translate_request
    is looked up per request (realtime/transport/server.py replaces it), and the new
    AsyncSocket is in `sockets` when 'connect' fires with its sid, before the first ping
    is scheduled."""
    eio = EngineServer(async_mode="aiohttp", logger=_LOG, monitor_clients=False)
    translated: list[dict[str, str]] = []

    def translate(environ: dict[str, str]) -> dict[str, str]:
        translated.append(environ)
        return environ

    def respond(status: str, headers: list[Any], body: bytes, environ: Any) -> str:
        return status

    eio._async = {**eio._async, "translate_request": translate, "make_response": respond}
    handshake = {"REQUEST_METHOD": "GET", "QUERY_STRING": "EIO=4", "REMOTE_ADDR": "192.0.2.7"}
    status = await eio.handle_request(handshake)
    sockets = list(eio.sockets.values())
    try:
        assert translated, blame(
            f"{ENGINE}.handle_request",
            "no longer reads self._async['translate_request'] per request",
            "realtime/transport/server.py SocketServer.__init__",
        )
        assert status.startswith("200"), f"handshake answered {status}"
        adopted = [type(s) for s in sockets] == [EngineSocket]
        assert adopted, blame(
            f"{ENGINE}._handle_connect",
            f"its new sockets are {[type(s).__name__ for s in sockets]} after 'connect' "
            "(an AsyncSocket, in sockets, before 'connect' with its sid, was relied on)",
            "realtime/transport/engine.py EngineServer._trigger_event",
        )
        assert sockets[0].address == "192.0.2.7", blame(
            f"{ENGINE}._handle_connect",
            "'connect' no longer gets the translated environ as its second argument",
            "realtime/transport/engine.py EngineServer._trigger_event (the session's address)",
        )
        assert sockets[0]._ping_entry is not None, blame(
            f"{ENGINE}._handle_connect",
            "no longer schedules the first ping after 'connect'",
            f"{_ES}.schedule_ping",
        )
    finally:
        for socket in sockets:
            entry = vars(socket).get("_ping_entry")
            if entry is not None:
                DelayQueue.cancel(entry)


def test_socketio_builds_our_engine_and_sends_its_events_to_our_overrides() -> None:
    sio = SocketServer(async_mode="aiohttp", logger=_LOG, engineio_logger=_LOG)
    where = "realtime/transport/server.py SocketServer"
    assert type(sio.eio) is EngineServer, blame(
        "socketio.base_server.BaseServer.__init__", "no longer calls _engineio_server_class", where
    )
    for event, method in (
        ("connect", "_handle_eio_connect"),
        ("message", "_handle_eio_message"),
        ("disconnect", "_handle_eio_disconnect"),
    ):
        handler = sio.eio.handlers.get(event)
        assert getattr(handler, "__func__", None) is getattr(SocketServer, method), blame(
            "socketio.base_server.BaseServer.__init__",
            f"engine event {event!r} goes to {handler!r}, not self.{method}",
            f"{where}.{method}",
        )


def test_the_aiohttp_driver_environ_has_what_we_read() -> None:
    request = make_mocked_request(
        "GET",
        "/socket.io/?EIO=4&transport=websocket",
        headers={"Origin": "https://a.example", "Host": "h.example"},
    )
    environ = translate_request(request)
    where = (
        "realtime/transport/engine.py _upgrade_websocket (aiohttp.request), "
        "realtime/transport/inbound.py "
        "(REQUEST_METHOD, wsgi.input), realtime/transport/server.py _check_origin (HTTP_ORIGIN), "
        "realtime/web/admin.py same_origins"
    )
    wanted = {
        "aiohttp.request": request,
        "REQUEST_METHOD": "GET",
        "HTTP_ORIGIN": "https://a.example",
        "HTTP_HOST": "h.example",
        "wsgi.url_scheme": "http",
    }
    wrong = sorted(key for key, value in wanted.items() if environ.get(key) != value)
    upstream = "engineio.async_drivers.aiohttp.translate_request"
    assert not wrong, blame(upstream, f"environ entries changed: {wrong}", where)
    read = getattr(environ["wsgi.input"], "read", None)
    assert inspect.iscoroutinefunction(read), blame(upstream, "wsgi.input.read is not async", where)
    # realtime/web/admin.py same_origins repeats engineio's same-origin rule.
    engine = _engine()
    forwarded = {**environ, "HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_HOST": "p, q"}
    for case in ({}, environ, forwarded):
        assert same_origins(case) == engine._cors_allowed_origins(case), blame(
            f"{ENGINE}._cors_allowed_origins",
            "its same-origin rule changed",
            "realtime/web/admin.py same_origins (a copy of it)",
        )


async def test_our_update_message_is_the_stock_emit_message() -> None:
    """The worker publishes `update` emits itself (realtime.core.wire), and web
    instances take a stock python-socketio emit of `update` as one (bench/publisher.py)."""

    class Capture(AsyncPubSubManager):  # type: ignore[misc]
        published: list[dict[str, Any]]

        async def _handle_emit(self, message: dict[str, Any]) -> None:
            pass

        async def _publish(self, data: dict[str, Any]) -> None:
            self.published = [*getattr(self, "published", []), data]

    stock = Capture()
    events = [{"topic": "metrics.cpu", "id": "1-0", "ts": 1, "data": {}}]
    await stock.emit(UPDATE_EVENT, events, namespace=NAMESPACE, room="metrics.cpu")
    [sent] = stock.published
    message = update_message("metrics.cpu", events, stock.host_id)
    del message["sent_at"], message["ids"]  # ours only; upstream ignores extra keys
    where = "realtime/core/wire.py update_message, realtime/fanout/manager.py _is_update"
    assert message == sent, blame(
        "socketio.async_pubsub_manager.AsyncPubSubManager.emit",
        f"its message is now {sent!r}",
        where,
    )
    assert _is_update(sent), blame(
        "socketio.async_pubsub_manager.AsyncPubSubManager.emit", "not taken as an update", where
    )


def test_the_room_registry_layout_we_read() -> None:
    manager = socketio.AsyncManager()
    manager.basic_enter_room("s1", "/", None, eio_sid="e1")
    manager.basic_enter_room("s1", "/", "metrics.cpu")
    where = (
        "realtime/transport/server.py connected (rooms[namespace][None]), _in_a_namespace; "
        "realtime/delivery/hub.py Delivery._route"
    )
    layout = (
        dict(manager.rooms["/"][None]),
        list(manager.get_participants("/", "metrics.cpu")),
        manager.sid_from_eio_sid("e1", "/"),
        manager.eio_sid_from_sid("s1", "/"),
    )
    assert layout == ({"s1": "e1"}, [("s1", "e1")], "s1", "e1"), blame(
        f"{MANAGER}.rooms", f"the registry reads back as {layout!r}", where
    )


# The stock manager's methods that read its room registry. RoomIndex stores no room for
# a client's own sid: it overrides those that read a room by name; the others read only
# the namespace's None room (or whether the namespace is there).
_ROOM_READERS = {
    "basic_disconnect": "overridden",
    "basic_enter_room": "overridden",
    "basic_leave_room": "overridden",
    "get_participants": "overridden",
    "get_rooms": "overridden",
    "emit": "namespace in rooms",
    "get_namespaces": "rooms.keys()",
    "eio_sid_from_sid": "None room",
    "sid_from_eio_sid": "None room",
    "is_connected": "None room",
    "is_pre_connected": "None room",
    "is_sid_room": "None room",
    "pre_disconnect": "None room",
}


def test_the_stock_manager_reads_rooms_only_where_the_room_index_answers() -> None:
    readers = set()
    for cls in (resolve(MANAGER), resolve(REDIS_MANAGER)):
        for name, function in inspect.getmembers(cls, inspect.isfunction):
            if name != "__init__" and ".rooms" in inspect.getsource(function):
                readers.add(name)
    new = sorted(readers - set(_ROOM_READERS))
    assert not new, blame(
        MANAGER,
        f"{', '.join(new)} now read the room registry (a client's own room is not stored)",
        _ROOMS,
    )


_FANOUT_MEANT = (
    "name thread _publish _handle_emit _thread"
    " basic_enter_room basic_leave_room basic_disconnect get_rooms get_participants"
)
SUBCLASSES = [  # ours, its upstream base, the upstream names it means to override
    (EngineSocket, SOCKET, "send poll schedule_ping close _upgrade_websocket"),
    (EngineServer, ENGINE, "_trigger_event handle_request _service_task"),
    (
        SocketServer,
        SERVER,
        "_engineio_server_class _trigger_event"
        " _handle_eio_connect _handle_eio_message _handle_eio_disconnect _handle_connect"
        " _send_packet _send_eio_packet environ",
    ),
    (FanoutManager, REDIS_MANAGER, _FANOUT_MEANT),
    (ShardedFanoutManager, REDIS_MANAGER, _FANOUT_MEANT),
    (
        IndexedManager,
        MANAGER,
        "basic_enter_room basic_leave_room basic_disconnect get_rooms get_participants",
    ),
    (TopicNamespace, "socketio.AsyncNamespace", "trigger_event"),
    (_HandedOver, "aiohttp.web.StreamResponse", "write_eof"),
]


def _own_names(cls: type) -> set[str]:
    """What our classes in `cls`'s MRO define: class attributes and `self.x =` in __init__."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] not in ("realtime", "bench"):
            continue
        names |= {n for n in vars(klass) if not n.startswith("__") and n != "_abc_impl"}
        init = vars(klass).get("__init__")
        if init is not None:
            tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
            names |= {
                node.attr
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            }
    return names


@pytest.mark.parametrize(
    ("ours", "upstream", "meant"), SUBCLASSES, ids=[f"{c.__name__}-{u}" for c, u, _ in SUBCLASSES]
)
def test_our_subclasses_shadow_only_the_upstream_names_they_mean_to(
    ours: type, upstream: str, meant: str
) -> None:
    """A name upstream gains that one of our subclasses already uses would silently
    replace upstream's (or our class default, for the adopted EngineSocket)."""
    theirs = set(dir(resolve(upstream))) | set(dir(instance(upstream)))
    clash = sorted((_own_names(ours) & theirs) - set(meant.split()))
    assert not clash, blame(
        upstream,
        f"now has {', '.join(clash)}, which {ours.__name__} also defines",
        f"{ours.__module__}.{ours.__name__}",
    )
