"""Who may connect and what a connection may do, checked before delivery: the token on
connect, the connection limit, topic grants, subscriptions per connection, the
subscribe/unsubscribe rate and the rate of a client's other events (an extension's).
One `Access` per web process; its state is per connection.

The connection limit counts clients (Engine.IO sessions), whichever namespaces they
join: one connected only to an extension's namespace counts, one connected to `/` and
`/chat` counts once.

A token expires while connected: the server sends `closing {"code": "token_expired",
"message"}` and disconnects the client (socket.io: reason "io server disconnect"); the
client connects again with a fresh token. The same holds for each namespace an extension
added (`joined`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import socketio

from realtime.core import errors
from realtime.core.keys import CLOSING_EVENT, NAMESPACE, TOKEN_EXPIRED
from realtime.core.settings import Settings
from realtime.ingest.rates import TokenBucket
from realtime.web.auth import OPEN, AuthError, Grant, TokenVerifier

logger = logging.getLogger(__name__)


class _Connection:
    # One per connection (tracemalloc, `python -m bench.idle_heap`): no instance dict,
    # and the rate bucket made at the first subscribe or unsubscribe. A bucket starts
    # full and refills to full while unused, so one made then holds what one made at
    # connect would.
    __slots__ = ("bucket", "engine", "expiry", "grant")

    def __init__(self, grant: Grant, engine: str) -> None:
        self.grant = grant
        self.engine = engine
        self.bucket: TokenBucket | None = None
        self.expiry: asyncio.TimerHandle | None = None


class Access:
    def __init__(
        self,
        settings: Settings,
        sio: socketio.AsyncServer,
        verifier: TokenVerifier | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sio = sio
        self.verifier = verifier
        self.max_connections = settings.max_connections
        self.max_subscriptions = settings.max_subscriptions
        self.rate = settings.subscribe_rate
        self.event_rate = settings.event_rate
        self.clock = clock
        self._connections: dict[str, _Connection] = {}
        # (sid, namespace) of extension namespaces -> (Engine.IO session, token's expiry)
        self._others: dict[tuple[str, str], tuple[str, asyncio.TimerHandle | None]] = {}
        # Engine.IO session -> how many of its namespace connections are admitted
        self._engines: dict[str, int] = {}
        # Engine.IO session -> the bucket of its events (`check_event`), made at its first
        self._event_buckets: dict[str, TokenBucket] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- connections ----------------------------------------------------------------------

    def connect(self, sid: str, auth: Any) -> None:
        """Admit a connection or raise ConnectionRefusedError, which the client sees as
        `connect_error` with the message (and `data.code`)."""
        engine = self._admit(sid, NAMESPACE)
        grant = self.verify(auth)
        connection = _Connection(grant, engine)
        connection.expiry = self._expiry(grant, sid, NAMESPACE)
        self._connections[sid] = connection
        self._engines[engine] = self._engines.get(engine, 0) + 1

    def join(self, sid: str, namespace: str, auth: Any) -> Grant:
        """Admit a connection to an extension's namespace (the limit, then the token) or
        raise ConnectionRefusedError; it ends when its token expires, as `/` does."""
        engine = self._admit(sid, namespace)
        grant = self.verify(auth)
        self._others[(sid, namespace)] = (engine, self._expiry(grant, sid, namespace))
        self._engines[engine] = self._engines.get(engine, 0) + 1
        return grant

    def left(self, sid: str, namespace: str) -> None:
        """An extension namespace's connection ended (or its connect was refused after
        `join`); a second call does nothing."""
        other = self._others.pop((sid, namespace), None)
        if other is not None:
            engine, expiry = other
            if expiry is not None:
                expiry.cancel()
            self._release(engine)

    def _admit(self, sid: str, namespace: str) -> str:
        """The connection's Engine.IO session, if the limit lets it in: a client already
        counted (connected to another namespace) always is."""
        engine: str = self.sio.manager.eio_sid_from_sid(sid, namespace) or sid
        if engine not in self._engines and len(self._engines) >= self.max_connections:
            logger.warning("refused a connection: at the limit of %d", self.max_connections)
            raise socketio.exceptions.ConnectionRefusedError(
                f"This server is at its limit of {self.max_connections} connections; "
                "try again later.",
                {"code": errors.LIMIT},
            )
        return engine

    def _release(self, engine: str) -> None:
        left = self._engines.pop(engine, 0) - 1
        if left > 0:
            self._engines[engine] = left
        else:
            self._event_buckets.pop(engine, None)

    def _expiry(self, grant: Grant, sid: str, namespace: str) -> asyncio.TimerHandle | None:
        if grant.expires_at is None:
            return None
        delay = max(0.0, grant.expires_at - time.time())
        return asyncio.get_running_loop().call_later(delay, self._spawn_expire, sid, namespace)

    def verify(self, auth: Any) -> Grant:
        """The grant of a connect's `auth`, or ConnectionRefusedError (`unauthorized`)."""
        if self.verifier is None:
            return OPEN
        try:
            return self.verifier.verify(auth)
        except AuthError as exc:
            logger.info("refused a connection: %s", exc)
            raise socketio.exceptions.ConnectionRefusedError(
                str(exc), {"code": errors.UNAUTHORIZED}
            ) from None

    def grant(self, sid: str) -> Grant | None:
        """What the connection `sid` (namespace `/`) may do; None if it is not connected."""
        connection = self._connections.get(sid)
        return None if connection is None else connection.grant

    def disconnected(self, sid: str) -> None:
        connection = self._connections.pop(sid, None)
        if connection is None:
            return
        if connection.expiry is not None:
            connection.expiry.cancel()
        self._release(connection.engine)

    @property
    def count(self) -> int:
        """Clients admitted: Engine.IO sessions connected to at least one namespace."""
        return len(self._engines)

    def _spawn_expire(self, sid: str, namespace: str) -> None:
        task = asyncio.ensure_future(self._expire(sid, namespace))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, sid: str, namespace: str) -> None:
        if namespace == NAMESPACE:
            if sid not in self._connections:
                return
        elif (sid, namespace) not in self._others:
            return  # its disconnect (`left`) releases it
        logger.info("disconnecting a client from %s: its token expired", namespace)
        await self.sio.emit(
            CLOSING_EVENT,
            {"code": TOKEN_EXPIRED, "message": "The token has expired; connect with a new one."},
            to=sid,
            namespace=namespace,
        )
        await self.sio.disconnect(sid, namespace=namespace)

    # -- requests -------------------------------------------------------------------------

    def check_rate(self, sid: str, event: str) -> dict[str, Any] | None:
        """An error ack when the connection sends subscribe/unsubscribe too fast."""
        connection = self._connections.get(sid)
        if connection is None:
            return None
        bucket = connection.bucket
        if bucket is None:
            # A reconnect's resubscribe of every topic at once fits in the bucket.
            capacity = max(self.max_subscriptions, self.rate)
            bucket = connection.bucket = TokenBucket(self.rate, capacity, self.clock)
        if bucket.take():
            return None
        return errors.error_ack(
            errors.LIMIT,
            f"Too many subscribe/unsubscribe requests: at most {self.rate:g}/s; "
            f"this {event} was not done.",
        )

    def check_event(self, sid: str, namespace: str, event: str) -> dict[str, Any] | None:
        """An error ack when the client sends events other than subscribe/unsubscribe
        (an extension's) faster than `REALTIME_EVENT_RATE`: one budget per client, in
        all its namespaces, so opening more namespaces does not buy more. A hostile
        client cannot keep an extension's handlers (publish, a database) busy."""
        if not self.event_rate:
            return None
        if namespace == NAMESPACE:
            connection = self._connections.get(sid)
            engine = None if connection is None else connection.engine
        else:
            other = self._others.get((sid, namespace))
            engine = None if other is None else other[0]
        if engine is None:
            return None  # not admitted here (the Admin UI's namespace): not ours to limit
        bucket = self._event_buckets.get(engine)
        if bucket is None:
            rate = self.event_rate
            bucket = self._event_buckets[engine] = TokenBucket(rate, max(1.0, rate), self.clock)
        if bucket.take():
            return None
        return errors.error_ack(
            errors.LIMIT,
            f"Too many events: at most {self.event_rate:g}/s per connection; "
            f"this {event[:64]!r} was not handled.",
        )

    def check_subscribe(self, sid: str, topic: str, subscribed: list[str]) -> dict[str, Any] | None:
        """An error ack when the connection may not subscribe to `topic` (it already
        holds the topics `subscribed`)."""
        connection = self._connections.get(sid)
        if connection is None:
            return errors.error_ack(errors.FORBIDDEN, "Not connected.")
        if not connection.grant.allows(topic):
            return errors.error_ack(
                errors.FORBIDDEN, f"The token does not allow subscribing to {topic}."
            )
        if topic not in subscribed and len(subscribed) >= self.max_subscriptions:
            return errors.error_ack(
                errors.LIMIT,
                f"At most {self.max_subscriptions} subscriptions per connection; "
                "unsubscribe from one first.",
            )
        return None

    async def aclose(self) -> None:
        for connection in self._connections.values():
            if connection.expiry is not None:
                connection.expiry.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
