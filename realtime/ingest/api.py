"""HTTP ingest, the first step of the data path: `POST /api/v1/events` -> the ingest
stream of each event's partition (`rt:ingest:{p}`). A 202 means Redis holds every event
of the request; bad input changes nothing; window-output topics are refused (only the
worker writes them).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from marshmallow import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from realtime.core import errors, jsoncodec
from realtime.core.keys import Keys
from realtime.core.metrics import ProcessMetrics
from realtime.core.peer import TrustedProxies
from realtime.core.settings import Settings
from realtime.core.text import text
from realtime.core.throttle import Throttle, locked_out
from realtime.core.topics import partition_of
from realtime.ingest.fastcheck import valid_events
from realtime.ingest.group_commit import GroupCommit
from realtime.ingest.publish_keys import IngestKeys, PublishKey, Unauthorized
from realtime.ingest.rates import IngestRate
from realtime.ingest.schemas import EventSchema, data_problem, field_errors

logger = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


class Refused(Exception):
    """Ingest refuses a request: the HTTP status, error code, message and field errors."""

    def __init__(
        self, status: int, code: str, message: str, fields: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.fields = fields


def _one(fields: dict[str, Any], single: bool) -> dict[str, Any]:
    """Field errors by event index, or, for a request of one event (not a list), its own."""
    return fields.get("0", fields) if single else fields


class NotReplicated(Exception):
    """The primary has the events, fewer than REALTIME_WAIT_REPLICAS replicas confirmed them."""


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refusing more than `limit` bytes without buffering past it, and
    a body that has not all arrived within `timeout_s` (BodyTooSlow)."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    content = request.content
    if content.is_eof():  # all of it arrived with the headers (most small requests)
        body = content.read_nowait()
        if len(body) > limit:
            raise BodyTooLarge
        return body
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(65536):
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow from None
    return b"".join(chunks)


def json_error(
    status: int, code: str, message: str, fields: dict[str, Any] | None = None
) -> web.Response:
    return web.json_response(
        errors.error_body(code, message, fields), status=status, dumps=jsoncodec.dumps
    )


def ingest_fields(event: dict[str, Any], now_ms: int) -> dict[str, bytes | str]:
    """One ingest stream entry: topic, event time (ms) and the data as JSON."""
    return {
        "topic": event["topic"],
        "ts": str(event.get("ts", now_ms)),
        "data": jsoncodec.dumpb(event["data"]),
    }


# KEYS: per event, its ingest stream, its idempotency key and the same in the legacy
# layout ('' and '' for none). ARGV: the keys' TTL (s), then per event: field-arg count
# f, f field/value args. The legacy key is read, never written (see Keys).
_APPEND_IDEMPOTENT = """
local ids = {}
local a = 2
for i = 1, #KEYS / 3 do
  local stream, idem, legacy = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local f = tonumber(ARGV[a])
  local id = false
  if idem ~= '' then id = redis.call('GET', idem) end
  if not id and legacy ~= '' then id = redis.call('GET', legacy) end
  if not id then
    id = redis.call('XADD', stream, '*', unpack(ARGV, a + 1, a + f))
    if idem ~= '' then redis.call('SET', idem, id, 'EX', ARGV[1]) end
  end
  ids[i] = id
  a = a + 1 + f
end
return ids
"""


class IngestWriter:
    """Appends validated events to the partitioned ingest streams, atomically per request."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.keys = Keys.of(settings)
        self.partitions = settings.partitions
        self.idempotency_ttl_s = settings.idempotency_ttl_s
        self.wait_replicas = settings.wait_replicas
        # Half the client's timeout, so the reply comes well before the socket gives up.
        self.wait_ms = max(1, int(settings.redis_timeout_s * 500))
        self._append_idempotent = redis.register_script(_APPEND_IDEMPOTENT)
        self._group = GroupCommit(redis, self.keys, self.partitions)

    def _stream(self, event: dict[str, Any]) -> str:
        return self.keys.ingest(partition_of(event["topic"], self.partitions))

    async def append(
        self, events: list[dict[str, Any]], data: list[bytes] | None = None
    ) -> list[str]:
        """Stores `events` and returns their ids; `data`: each event's data as JSON, if
        the caller has it already."""
        now_ms = int(time.time() * 1000)
        if self.keys.cluster:
            return await self._append_per_partition(events, now_ms)
        if self.wait_replicas or any("key" in event for event in events):
            return await self._append(events, now_ms)
        if data is None:
            data = [jsoncodec.dumpb(event["data"]) for event in events]
        return await self._group.append(events, data, now_ms)

    async def _append_per_partition(self, events: list[dict[str, Any]], now_ms: int) -> list[str]:
        """Cluster mode: a MULTI or script may touch one hash slot only, so each
        partition's events are written by their own (to their shard, all at once)."""
        groups: dict[int, list[int]] = {}
        for index, event in enumerate(events):
            groups.setdefault(partition_of(event["topic"], self.partitions), []).append(index)
        written = await asyncio.gather(
            *[self._append([events[i] for i in indexes], now_ms) for indexes in groups.values()]
        )
        ids = [""] * len(events)
        for indexes, group_ids in zip(groups.values(), written, strict=True):
            for index, event_id in zip(indexes, group_ids, strict=True):
                ids[index] = event_id
        return ids

    async def _append(self, events: list[dict[str, Any]], now_ms: int) -> list[str]:
        if self.wait_replicas:
            return await self._append_replicated(events, now_ms)
        if any("key" in event for event in events):
            return await self._append_with_keys(events, now_ms)
        async with self.redis.pipeline(transaction=True) as pipe:
            for event in events:
                pipe.xadd(self._stream(event), ingest_fields(event, now_ms))  # type: ignore[arg-type]
            ids = await pipe.execute()
        return [text(i) for i in ids]

    async def _append_with_keys(self, events: list[dict[str, Any]], now_ms: int) -> list[str]:
        keys, args = self._script_args(events, now_ms)
        ids = await self._append_idempotent(keys=keys, args=args)
        return [text(i) for i in ids]

    async def _append_replicated(self, events: list[dict[str, Any]], now_ms: int) -> list[str]:
        keys, args = self._script_args(events, now_ms)
        # One connection for both: WAIT counts the replicas that have this connection's
        # writes so far (on another connection it would count nothing of ours).
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._append_idempotent(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
            ids, replicas = await pipe.execute()
        if int(replicas) < self.wait_replicas:
            raise NotReplicated(f"{replicas} of {self.wait_replicas} replica(s) confirmed")
        return [text(i) for i in ids]

    def _script_args(
        self, events: list[dict[str, Any]], now_ms: int
    ) -> tuple[list[str], list[bytes | str | int]]:
        keys: list[str] = []
        args: list[bytes | str | int] = [self.idempotency_ttl_s]
        for event in events:
            key = event.get("key")
            keys.append(self._stream(event))
            if key is None:
                keys += ["", ""]
            else:
                topic = event["topic"]
                keys += [
                    self.keys.idempotency(topic, key),
                    self.keys.legacy_idempotency(topic, key),
                ]
            fields = ingest_fields(event, now_ms)
            args.append(2 * len(fields))
            for name, value in fields.items():
                args += [name, value]
        return keys, args


def _oversize(data: list[bytes], limit: int) -> dict[str, Any]:
    """Field errors for the events whose `data` (as JSON) is over `limit` bytes."""
    fields: dict[str, Any] = {}
    for n, blob in enumerate(data):
        size = len(blob)
        if size > limit:
            fields[str(n)] = {"data": [f"{size} bytes of JSON; the limit is {limit}."]}
    return fields


def _may_hold_big_integers(value: Any) -> bool:
    """orjson decodes an integer beyond 64 bits as a float: an integral float that large
    may have been one (cheap test; the caller then reads the body exactly)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and abs(item) >= 2**63 and item.is_integer():
            return True  # rounding: -(2**63) - 1 decodes as the float -(2**63)
    return False


def _big_integers(body: bytes, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Field errors for the events whose `data` has an integer literal beyond 64 bits,
    by index. Only when orjson's result says it may (the stdlib keeps big ints exact)."""
    if not any(_may_hold_big_integers(event["data"]) for event in events):
        return {}
    exact = json.loads(body)  # depth and JSON validity already checked
    items = exact if isinstance(exact, list) else [exact]
    fields: dict[str, Any] = {}
    for n, item in enumerate(items):
        problem = data_problem(item.get("data")) if isinstance(item, dict) else None
        if problem is not None:
            fields[str(n)] = {"data": [problem]}
    return fields


class IngestHandler:
    """The `POST /api/v1/events` handler; the writer and rate come from the running app.

    Checks, in order: the publish key (429 while locked out after failed keys, 401), body
    size, JSON, batch length, the schema, each event's size, the key's topics (403), the
    key's rate (429), then Redis (503)."""

    def __init__(
        self,
        writer_key: web.AppKey[IngestWriter],
        settings: Settings,
        window_output_of: Callable[[str], str | None] | None = None,
        *,
        keys: IngestKeys | None = None,
        rate_key: web.AppKey[IngestRate] | None = None,
        metrics: ProcessMetrics | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.writer_key = writer_key
        self.throttle = throttle  # failed keys (realtime.core.throttle)
        self.proxies = TrustedProxies(settings.trusted_proxies)
        # The pipeline whose window outputs include a topic (ingest refuses it), if any.
        self.window_output_of = window_output_of
        self.rate_key = rate_key
        self.keys = keys
        self.metrics = metrics
        self.max_body = settings.max_body_bytes
        self.read_timeout_s = settings.read_timeout_s
        self.max_batch = settings.max_batch
        self.max_event = settings.max_event_bytes
        self.schema = EventSchema()

    async def handle(self, request: web.Request) -> web.Response:
        publisher: PublishKey | None = None
        if self.keys is not None:
            refusal, publisher = await self._authenticate(request, self.keys)
            if refusal is not None:
                return refusal
        try:
            body = await read_body(request, self.max_body, self.read_timeout_s)
        except BodyTooLarge:
            return json_error(413, errors.TOO_LARGE, f"Request body exceeds {self.max_body} bytes.")
        except BodyTooSlow:
            logger.info("ingest body not complete within %gs; closing", self.read_timeout_s)
            response = json_error(
                408,
                errors.TIMEOUT,
                f"The request body did not arrive within {self.read_timeout_s:g}s.",
            )
            response.force_close()
            return response
        try:
            payload = jsoncodec.loads(body)
        except jsoncodec.JSONDecodeError as exc:
            return json_error(400, errors.INVALID_JSON, f"Body is not valid JSON: {exc}")
        try:
            events, data = self._validated(payload, body, publisher)
        except Refused as refused:
            return json_error(refused.status, refused.code, str(refused), refused.fields)
        try:
            if publisher is not None and self.rate_key is not None:
                wait_s = await request.app[self.rate_key].retry_after_s(publisher.name, len(events))
                if wait_s:
                    response = json_error(
                        429,
                        errors.LIMIT,
                        "This publish key is over its rate of "
                        f"{request.app[self.rate_key].limit} events/s; retry later.",
                    )
                    response.headers["Retry-After"] = str(wait_s)
                    return response
            ids = await request.app[self.writer_key].append(events, data)
        except NotReplicated as exc:
            logger.warning("ingest not confirmed by replicas: %s", exc)
            response = json_error(
                503,
                errors.UNAVAILABLE,
                "Stored on the primary but not confirmed by enough replicas; retry with the "
                "same idempotency keys.",
            )
            response.headers["Retry-After"] = "1"
            return response
        except (RedisError, OSError) as exc:
            logger.warning("ingest refused, Redis unavailable: %s", exc)
            if self.metrics is not None:
                self.metrics.redis_error("ingest")
            response = json_error(503, errors.UNAVAILABLE, "Storage unavailable; retry later.")
            response.headers["Retry-After"] = "1"
            return response
        # The same answer as json_response's, without its str round trip.
        return web.Response(
            body=jsoncodec.dumpb({"ids": ids}),
            status=202,
            content_type="application/json",
            charset="utf-8",
        )

    async def publisher(
        self, request: web.Request
    ) -> tuple[web.Response | None, PublishKey | None]:
        """The publish key a request presents, checked (and throttled) as ingest checks
        it, for other doors that take publish keys: (None, the key) or (the refusal,
        None); (None, None) when ingest takes no keys."""
        if self.keys is None:
            return None, None
        return await self._authenticate(request, self.keys)

    async def _authenticate(
        self, request: web.Request, keys: IngestKeys
    ) -> tuple[web.Response | None, PublishKey | None]:
        """(None, the key) or (the refusal, None): 401, or 429 while the client's address
        or the presented key is locked out after failed keys (`realtime.core.throttle`)."""
        authorization = request.headers.get("Authorization")
        presented = keys.presented(authorization)  # None: no key at all, not a guess
        throttle = self.throttle if presented is not None else None
        address = self.proxies.peer_of(request).address if throttle is not None else ""
        if throttle is not None and presented is not None:  # (both, for mypy)
            wait_s = await throttle.wait_s(address, presented)
            if wait_s:
                response = json_error(429, errors.LIMIT, locked_out(wait_s))
                response.headers["Retry-After"] = str(wait_s)
                return response, None
        try:
            return None, keys.authenticate(authorization)
        except Unauthorized as exc:
            if throttle is not None and presented is not None:
                await throttle.failed(address, presented)
            response = json_error(401, errors.UNAUTHORIZED, str(exc))
            response.headers["WWW-Authenticate"] = 'Bearer realm="realtime"'
            return response, None

    def validate(
        self, payload: Any, body: bytes | None = None, publisher: PublishKey | None = None
    ) -> list[dict[str, Any]]:
        """The events of a request's decoded `payload` (one event or a list), checked in
        the order the class says; `Refused` otherwise. `body`: the JSON it was decoded
        from, if it was (big integers are checked there); `payload` is the events of an
        extension's `publish` otherwise (realtime/web/extensions.py)."""
        return self._validated(payload, body, publisher)[0]

    def _validated(
        self, payload: Any, body: bytes | None, publisher: PublishKey | None
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        """`validate`'s events, and each one's data as JSON (measured, then stored)."""
        single = not isinstance(payload, list)
        items = [payload] if single else payload
        if not items:
            raise Refused(400, errors.INVALID, "Send one event or a non-empty list of events.")
        if len(items) > self.max_batch:
            raise Refused(
                413, errors.TOO_LARGE, f"Batch of {len(items)} events exceeds {self.max_batch}."
            )
        # Decoded JSON: the exact fast check first (`fastcheck.py`); the schema, the
        # reference that writes every error, for anything it does not pass. Another
        # caller's objects (an extension's) go to the schema directly.
        events = valid_events(items) if body is not None else None
        inexact: dict[str, Any] = {}
        if events is None:
            try:
                events = self.schema.load(items, many=True)
            except ValidationError as exc:
                fields = field_errors(exc)
                raise Refused(400, errors.INVALID, "Invalid event.", _one(fields, single)) from None
            inexact = _big_integers(body, events) if body is not None else {}
        problems = inexact or self._derived_topics(events)
        if problems:
            raise Refused(400, errors.INVALID, "Invalid event.", _one(problems, single))
        try:
            data = [jsoncodec.dumpb(event["data"]) for event in events]
        except TypeError:  # an extension's data, not from JSON: what JSON cannot hold
            raise Refused(400, errors.INVALID, "Invalid event: data must be JSON.") from None
        oversize = _oversize(data, self.max_event)
        if oversize:
            raise Refused(
                413,
                errors.TOO_LARGE,
                f"Event data exceeds {self.max_event} bytes.",
                _one(oversize, single),
            )
        if publisher is not None:
            refused = sorted({e["topic"] for e in events if not publisher.allows(e["topic"])})
            if refused:
                raise Refused(
                    403,
                    errors.FORBIDDEN,
                    f"This publish key may not publish to {', '.join(refused)}.",
                )
        return events, data

    def _derived_topics(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Field errors for events on window-output topics, by index (as marshmallow's)."""
        if self.window_output_of is None:
            return {}
        window_output_of = self.window_output_of
        if all(window_output_of(topic) is None for topic in {e["topic"] for e in events}):
            return {}
        problems: dict[str, Any] = {}
        for index, event in enumerate(events):
            pipeline = window_output_of(event["topic"])
            if pipeline is not None:
                problems[str(index)] = {
                    "topic": [
                        f"{event['topic']} is a window output of pipeline {pipeline!r}; "
                        "only the worker writes it."
                    ]
                }
        return problems
