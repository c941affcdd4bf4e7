"""The Socket.IO Admin UI (python-socketio's `instrument()`), off unless configured.

Not a step of the data path: an operator's window onto the web instances (connected
clients, rooms = topics, packet rates), in namespace `/admin`. It exists only when both
`REALTIME_ADMIN_USER` and `REALTIME_ADMIN_PASSWORD` are set; it is read-only unless
`REALTIME_ADMIN_READ_ONLY=0`; it runs in python-socketio's "production" mode, which does
not hook every emit and never sends client handshakes (headers, tokens) to the UI.

CORS, deliberately: the hosted UI at `REALTIME_ADMIN_ORIGIN` (default
`https://admin.socket.io`) connects cross-origin, and Engine.IO checks origins for the
whole endpoint, not per namespace. So that origin is added to the allowed ones, and
`SocketServer` refuses it on every namespace except `/admin`. Set the variable empty to
allow no extra origin (a self-hosted UI on an allowed origin).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from realtime.settings import Settings

ADMIN_NAMESPACE = "/admin"


def credentials_check(settings: Settings) -> Callable[[Any], bool]:
    """The `auth` callable for `instrument()`: constant-time comparison of both fields."""
    user = settings.admin_user.encode()
    password = settings.admin_password.encode()

    def check(auth: Any) -> bool:
        if not isinstance(auth, Mapping):
            return False
        given_user = str(auth.get("username", "")).encode()
        given_password = str(auth.get("password", "")).encode()
        # Both comparisons always run, so timing tells nothing about which one failed.
        user_ok = hmac.compare_digest(given_user, user)
        password_ok = hmac.compare_digest(given_password, password)
        return user_ok and password_ok

    return check


def trusts(proxies: Sequence[str], environ: Mapping[str, Any]) -> bool:
    """Whether this request's peer is one of the trusted proxies (IPs or networks)."""
    request = environ.get("aiohttp.request")
    peer = getattr(request, "remote", None)
    if not proxies or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False  # a unix socket, say: nobody vouches for it
    return any(address in ipaddress.ip_network(p, strict=False) for p in proxies)


def same_origins(environ: Mapping[str, Any], proxies: Sequence[str] | None = None) -> list[str]:
    """The page origins that are this request's own: python-engineio's same-origin rule,
    except that X-Forwarded-Host counts only from a trusted proxy (python-engineio
    believes it from anyone, which makes any page same-origin). X-Forwarded-Proto still
    counts from anyone, as before: TLS-terminating proxies set it, and it cannot make
    another host's page same-origin. `proxies=None`: engineio's rule unchanged."""
    scheme = environ.get("wsgi.url_scheme")  # python-engineio took X-Forwarded-Proto
    host = environ.get("HTTP_HOST")
    if not scheme or not host:
        return []
    origins = [f"{scheme}://{host}"]
    if "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_HOST" in environ:
        fwd_scheme = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
        fwd_host = environ.get("HTTP_X_FORWARDED_HOST", host).split(",")[0].strip()
        if proxies is not None and not trusts(proxies, environ):
            fwd_host = host
        origins.append(f"{fwd_scheme}://{fwd_host}")
    return origins


def cors_allowed_origins(settings: Settings) -> list[str] | Callable[..., bool]:
    """python-engineio's `cors_allowed_origins`: same-origin only (`same_origins`, never
    python-engineio's own rule, which believes anyone's X-Forwarded-Host) or the
    configured list, plus the admin UI's origin when the admin UI is on."""
    configured = list(settings.cors_origins)
    admin_origin = admin_only_origin(settings)
    if configured:
        return configured if admin_origin is None else [*configured, admin_origin]
    proxies = settings.trusted_proxies

    def allowed(origin: str | None, environ: Mapping[str, Any]) -> bool:
        return origin == admin_origin or origin in same_origins(environ, proxies)

    return allowed


def admin_only_origin(settings: Settings) -> str | None:
    """The origin allowed to open `/admin` and nothing else, if there is one."""
    if not settings.admin_enabled or not settings.admin_origin:
        return None
    if settings.admin_origin in settings.cors_origins:
        return None  # explicitly trusted for everything
    return settings.admin_origin


def instrument(sio: Any, settings: Settings) -> Any:
    """Turn the Admin UI on for `sio`; returns python-socketio's InstrumentedAsyncServer
    (call its `shutdown()` on exit), or None when the admin UI is not configured.

    python-socketio patches engine classes process-wide here: instrument one server per
    process (the web process has one).
    """
    if not settings.admin_enabled:
        return None
    return sio.instrument(
        auth=credentials_check(settings),
        mode="production",
        read_only=settings.admin_read_only,
        namespace=ADMIN_NAMESPACE,
    )
