"""The WSGI-style environ python-socketio keeps for each connection, packed: part of
step 5 (the Socket.IO server's per-connection state).

python-socketio holds every connection's environ for as long as the connection lives:
its namespace connects hand it to the connect handlers (extensions' among them,
realtime/web/extensions.py) and `get_environ` returns it. As a dict of its text
entries it cost about 1.3 KiB a connection (tracemalloc: the dict, its `HTTP_*` keys,
the header values), a quarter of an idle connection. Packed, it is one string of the
values and a tuple of the keys that connections with the same headers share; a reader
gets a new dict built from it, with the same entries as before.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SEPARATOR = "\x00"  # never in a header value (HTTP forbids NUL); checked anyway
MAX_LAYOUTS = 256  # distinct key sets shared; past it a connection keeps its own


class Packed:
    """One environ's text entries: the shared keys and the values joined."""

    __slots__ = ("keys", "values")

    def __init__(self, keys: tuple[str, ...], values: str) -> None:
        self.keys = keys
        self.values = values

    def unpack(self) -> dict[str, str]:
        return dict(zip(self.keys, self.values.split(_SEPARATOR), strict=True))


class Environs(dict[str, Any]):
    """python-socketio's `environ` registry (eio_sid -> environ), storing each one
    packed. Reading an entry (`[eio_sid]`, `get`) gives a new dict of its text entries:
    what python-socketio's readers (connect handlers, `get_environ`, the admin
    instrumentation) got before; a handler's changes to it are not kept."""

    def __init__(self) -> None:
        super().__init__()
        self._layouts: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __setitem__(self, eio_sid: str, environ: Mapping[str, Any]) -> None:
        super().__setitem__(eio_sid, self.pack(environ))

    def __getitem__(self, eio_sid: str) -> dict[str, Any]:
        return _unpacked(super().__getitem__(eio_sid))

    def get(self, eio_sid: str, default: Any = None) -> Any:
        stored = super().get(eio_sid)
        return default if stored is None else _unpacked(stored)

    def pack(self, environ: Mapping[str, Any]) -> Packed | dict[str, str]:
        """The text entries of `environ` (headers, query string, path, address: the
        rest held aiohttp's whole request), packed."""
        text = {k: v for k, v in environ.items() if isinstance(k, str) and isinstance(v, str)}
        if any(_SEPARATOR in v for v in text.values()):
            return text
        keys = tuple(text)
        shared = self._layouts.get(keys)
        if shared is None:
            if len(self._layouts) < MAX_LAYOUTS:
                self._layouts[keys] = keys
            shared = keys
        return Packed(shared, _SEPARATOR.join(text.values()))


def _unpacked(stored: Packed | dict[str, str]) -> dict[str, Any]:
    return stored.unpack() if isinstance(stored, Packed) else dict(stored)
