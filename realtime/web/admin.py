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
from collections.abc import Callable, Mapping
from typing import Any

from realtime.core.settings import Settings

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


def same_origins(environ: Mapping[str, Any]) -> list[str]:
    """The page origins python-engineio treats as same-origin for this request."""
    scheme = environ.get("wsgi.url_scheme")
    host = environ.get("HTTP_HOST")
    if not scheme or not host:
        return []
    origins = [f"{scheme}://{host}"]
    if "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_HOST" in environ:
        fwd_scheme = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
        fwd_host = environ.get("HTTP_X_FORWARDED_HOST", host).split(",")[0].strip()
        origins.append(f"{fwd_scheme}://{fwd_host}")
    return origins


def cors_allowed_origins(settings: Settings) -> list[str] | Callable[..., bool] | None:
    """python-engineio's `cors_allowed_origins`: same-origin only (None) or the configured
    list, plus the admin UI's origin when the admin UI is on."""
    configured = list(settings.cors_origins)
    admin_origin = admin_only_origin(settings)
    if admin_origin is None:
        return configured or None
    if configured:
        return [*configured, admin_origin]

    def allowed(origin: str | None, environ: Mapping[str, Any]) -> bool:
        return origin == admin_origin or origin in same_origins(environ)

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
