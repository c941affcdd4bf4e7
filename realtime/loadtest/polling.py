"""A lean Socket.IO client over Engine.IO HTTP long-polling, for load generation: the
share of simulated clients that cannot use WebSockets (corporate proxies, old networks).

Same surface as `wsclient.SioWebSocket`: `ready`, `closed`, `call`, `abort`, `close`,
and an `on_update` callback with the arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from realtime.loadtest import frames
from realtime.loadtest.frames import ProtocolError
from realtime.loadtest.wsclient import CloseCallback, UpdateCallback, _noop_update, now_ms

_cache_buster = itertools.count()


def polling_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"only http(s):// URLs are supported for polling, got {url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/socket.io/?EIO=4&transport=polling"


class SioPolling:
    def __init__(
        self,
        url: str,
        connector: aiohttp.BaseConnector,
        *,
        on_update: UpdateCallback = _noop_update,
        on_close: CloseCallback | None = None,
        auth: dict[str, Any] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.base = polling_url(url)
        # A cookie jar per client: load balancers pin long-polling sessions by cookie.
        self.session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )
        self.on_update = on_update
        self.on_close = on_close
        self.auth = auth
        self.sid: str | None = None
        self.tag: Any = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[BaseException | None] = loop.create_future()
        self._acks = frames.Acks()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def _url(self) -> str:
        sid = f"&sid={self.sid}" if self.sid else ""
        return f"{self.base}{sid}&t={next(_cache_buster)}"

    async def start(self) -> SioPolling:
        async with self.session.get(self._url()) as response:
            if response.status != 200:
                raise ConnectionError(f"polling handshake refused: HTTP {response.status}")
            body = await response.text()
        packets = frames.split_polling_payload(body)
        if not packets:
            raise ProtocolError("empty polling handshake")
        self.sid = frames.eio_open(packets[0])["sid"]
        await self._post(frames.sio_connect(self.auth))
        self._task = asyncio.create_task(self._poll())
        return self

    async def _post(self, packet: str) -> None:
        async with self.session.post(self._url(), data=packet.encode()) as response:
            if response.status != 200:
                raise ConnectionError(f"polling POST refused: HTTP {response.status}")
            await response.read()

    async def _poll(self) -> None:
        reason: BaseException | None = None
        try:
            while not self._closing:
                async with self.session.get(self._url()) as response:
                    if response.status != 200:
                        raise ConnectionError(f"polling GET answered HTTP {response.status}")
                    body = await response.text()
                at = now_ms()
                for packet in frames.split_polling_payload(body):
                    if await self._on_packet(packet, at):
                        return
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            reason = exc
        finally:
            self._finish(reason)

    async def _on_packet(self, packet: str, at: float) -> bool:
        """Handle one Engine.IO packet; True when the session ended."""
        kind = packet[:1]
        if kind == frames.EIO_PING:
            await self._post(frames.EIO_PONG)
        elif kind == frames.EIO_CLOSE:
            return True
        elif kind == frames.EIO_MESSAGE:
            sio = frames.parse_sio(packet[1:])
            if sio.kind == frames.SIO_EVENT and isinstance(sio.data, list) and sio.data:
                if sio.data[0] == "update" and len(sio.data) > 1:
                    self.on_update(self, sio.data[1], at)
            elif sio.kind == frames.SIO_CONNECT:
                if not self.ready.done():
                    self.ready.set_result(None)
            elif sio.kind == frames.SIO_ACK:
                self._acks.answered(sio)
            elif sio.kind == frames.SIO_CONNECT_ERROR:
                raise ConnectionRefusedError(f"Socket.IO connect refused: {sio.data}")
            elif sio.kind == frames.SIO_DISCONNECT:
                return True
        return False

    def _finish(self, reason: BaseException | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(reason or ConnectionError("session closed during connect"))
            self.ready.exception()
        self._acks.fail_all()
        if not self.closed.done():
            self.closed.set_result(reason)
        asyncio.get_running_loop().create_task(self.session.close())
        if self.on_close is not None and not self._closing:
            self.on_close(self, reason)

    async def call(self, event: str, *args: Any, timeout: float = 10.0) -> Any:
        return await self._acks.call(self._post, event, *args, timeout=timeout)

    @property
    def is_open(self) -> bool:
        return self.ready.done() and not self.closed.done()

    def abort(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        asyncio.get_running_loop().create_task(self.session.close())

    def close(self) -> None:
        """Politely: an Engine.IO close packet, then stop polling."""
        self._closing = True

        async def bye() -> None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await self._post(frames.EIO_CLOSE)
            self.abort()

        asyncio.get_running_loop().create_task(bye())


async def connect(
    url: str,
    connector: aiohttp.BaseConnector,
    *,
    on_update: UpdateCallback = _noop_update,
    on_close: CloseCallback | None = None,
    timeout: float = 10.0,
    auth: dict[str, Any] | None = None,
) -> SioPolling:
    client = SioPolling(url, connector, on_update=on_update, on_close=on_close, auth=auth)
    try:
        async with asyncio.timeout(timeout):
            await client.start()
            await client.ready
    except BaseException:
        client.abort()
        raise
    return client
