"""What each environment variable means, in words, for the generated reference
(`python -m docs.gen` -> docs/reference/environment.md). `Settings.from_env` in
`settings.py` reads the variables; `tests/test_docs.py` fails when a variable it reads
has no entry here, or an entry names a variable it does not read.
"""

from __future__ import annotations

# Links are relative to docs/.
ENVIRONMENT_DOCS: dict[str, str] = {
    "REDIS_URL": (
        "Redis: `redis://`, `rediss://` (TLS), `unix://`, `redis+sentinel://` (see [Redis "
        "URL](configuration.md#redis-url))"
    ),
    "PORT": "web port (`realtime serve`)",
    "REALTIME_HOST": "web bind address",
    "REALTIME_LISTEN_BACKLOG": (
        "connections the kernel holds for the web before it accepts them (capped by "
        "`net.core.somaxconn`): a reconnect storm arrives at once, and a connection attempt "
        "that finds the queue full waits for the client's retry, a second or more"
    ),
    "REALTIME_PREFIX": "prefix of every Redis key and channel",
    "REALTIME_INSECURE": (
        "`1`: start even when client or ingest auth is not configured (that side is then open; "
        "a warning on every start). `realtime dev` sets it"
    ),
    "REALTIME_JWT_SECRET": (
        "HS256 secret of client tokens, at least 32 characters (a secret: never logged)"
    ),
    "REALTIME_JWT_PUBLIC_KEY": "instead: PEM public key of client tokens (RSA: RS256, EC: ES256)",
    "REALTIME_JWT_AUDIENCE": "the `aud` client tokens must carry; unset: not checked",
    "REALTIME_JWT_ISSUER": "the `iss` client tokens must carry; unset: not checked",
    "REALTIME_INGEST_KEYS": (
        "publish keys: `KEY` or `KEY:PATTERN|PATTERN`, comma-separated (secrets)"
    ),
    "REALTIME_MAX_EVENT_BYTES": "largest `data` of one ingested event, as JSON",
    "REALTIME_INGEST_RATE": "events/s one publish key may ingest over all instances; `0`: no limit",
    "REALTIME_MAX_MESSAGE_BYTES": "largest packet a Socket.IO client may send (at least 1024)",
    "REALTIME_MAX_SUBSCRIPTIONS": "subscriptions per connection",
    "REALTIME_SUBSCRIBE_RATE": "subscribe/unsubscribe requests per second per connection",
    "REALTIME_EVENT_RATE": (
        "other Socket.IO events (an extension's) a client may send per second, in all its "
        "namespaces together (bursts of as many); over it, the event is not handled and an "
        "ack asked for is `limit`; 0: no limit"
    ),
    "REALTIME_MAX_CONNECTIONS": (
        "Socket.IO clients per web instance (one in `/` and an extension namespace counts once)"
    ),
    "REALTIME_CONNECT_TIMEOUT_S": (
        "a connection that has not connected to a Socket.IO namespace within this is closed"
    ),
    "REALTIME_TOKEN": "client side: the JWT `realtime watch` / `loadtest` connect with",
    "REALTIME_INGEST_KEY": (
        "client side: the publish key `realtime publish` / `loadtest` / `realtime dev`'s demo "
        "feed send"
    ),
    "REALTIME_CORS_ORIGINS": (
        "comma-separated origins allowed to connect from a browser; unset: the server's own "
        "origin only"
    ),
    "REALTIME_TRUSTED_PROXIES": (
        "comma-separated IPs or CIDR networks of your reverse proxies / load balancers: only "
        "from these peers do `X-Forwarded-For` (the client's address), `X-Forwarded-Proto` "
        "and `X-Forwarded-Host` (what is same-origin) count; from anyone else they are "
        "ignored (see [Security](security.md#client-addresses-and-proxies))"
    ),
    "REALTIME_BIND_SESSIONS": (
        "`1` (default): an Engine.IO session takes polling requests and its websocket upgrade "
        "only from the client address that opened it (IPv6: its /64); `0`: from anyone "
        "holding its sid"
    ),
    "REALTIME_AUTH_FAILURES": (
        "failed credentials (admin UI, `/metrics`, publish keys) allowed per client address "
        "and per credential before each further failure locks it out for 1 s, 2 s, 4 s, ... "
        "(429 + `Retry-After`); counted in Redis across instances; `0`: no throttling"
    ),
    "REALTIME_AUTH_LOCKOUT_MAX_S": (
        "the longest lockout after failed credentials; failures are forgotten after twice "
        "this without one"
    ),
    "REALTIME_READ_TIMEOUT_S": (
        "an HTTP connection whose request headers have not all arrived within this (from its "
        "start, or from the end of its previous response: the idle keep-alive limit too) is "
        "closed; a request body not complete within this is answered 408 `timeout` and closed"
    ),
    "REALTIME_PING_INTERVAL_MS": (
        "Engine.IO heartbeat: the server pings each client this often, in milliseconds, "
        "announced exactly in the handshake"
    ),
    "REALTIME_PING_INTERVAL_S": (
        "the older name of `REALTIME_PING_INTERVAL_MS`, in whole seconds (still works; "
        "`_MS` wins when both are set)"
    ),
    "REALTIME_PING_TIMEOUT_MS": (
        "a client that has not answered a ping within this many milliseconds is disconnected"
    ),
    "REALTIME_PING_TIMEOUT_S": (
        "the older name of `REALTIME_PING_TIMEOUT_MS`, in whole seconds (still works; `_MS` "
        "wins when both are set)"
    ),
    "REALTIME_WS_COMPRESSION": (
        "`1`: accept permessage-deflate on websockets (costs CPU per recipient and ~90 KiB per "
        "connection; see [Performance](benchmarks.md))"
    ),
    "REALTIME_BATCH_TICK_MS": (
        "live batching: an event a tick or more after the last hand-out began goes out at "
        "once; ones that arrive sooner wait until then (under load, while a batch is "
        "handed out or after one of several fan-out messages, until a tick after it) and go "
        "out together, one `update` packet per topic; `0`: one packet per fan-out message"
    ),
    "REALTIME_CLIENT_BACKLOG_BYTES": (
        "a connection's unsent bytes past which its updates are held back (see [Slow "
        "clients](protocol.md#slow-clients))"
    ),
    "REALTIME_CLIENT_BACKLOG_PACKETS": "the same bound in packets",
    "REALTIME_SLOW_CLIENT_S": (
        "a connection behind for this long in all is sent `closing` and disconnected"
    ),
    "REALTIME_RECOVERY_S": (
        "seconds a disconnected Socket.IO session can be recovered (socket.io-client's "
        "`socket.recovered`, or the resume token): its subscriptions come back and what it "
        "missed is replayed; `0` turns recovery off, and `update` packets then carry no "
        "trailing offset (for python-socketio handlers that take one argument)"
    ),
    "REALTIME_SSE_HEARTBEAT_S": (
        "seconds between comment heartbeats (`: ping`) on an idle Server-Sent Events stream "
        "(`GET /api/v1/stream`), so proxies keep it open"
    ),
    "REALTIME_PRESENCE_TTL_S": (
        "seconds after its last heartbeat that a web instance which died (SIGKILL) stops "
        "counting in every topic's viewer count ([presence](presence.md)); it heartbeats "
        "every third of this"
    ),
    "REALTIME_PRESENCE_FLUSH_MS": (
        "a web instance writes its changed viewer counts to Redis at most this often, in "
        "milliseconds"
    ),
    "REALTIME_DASHBOARD_DIR": (
        "directory of the built dashboard served at `/`; unset: the build inside the package"
    ),
    "REALTIME_PARTITIONS": "ingest partitions (streams `rt:ingest:0..P-1`)",
    "REALTIME_MAX_BODY_BYTES": "largest ingest request body",
    "REALTIME_MAX_BATCH": "most events in one ingest request",
    "REALTIME_IDEMPOTENCY_TTL_S": "how long an ingest idempotency `key` is remembered (s)",
    "REALTIME_HISTORY_MAXLEN": "events kept per topic history stream (approximate)",
    "REALTIME_DIRECTORY_IDLE_S": (
        "a topic with no event for this many seconds leaves the topic directory "
        "(GET /api/v1/topics)"
    ),
    "REALTIME_HISTORY_RETENTION_MS": (
        "how long a topic's history is kept, for topics no `retention` rule of the pipelines "
        "file names ([Pipelines](pipelines.md#retention)); 0: by count only"
    ),
    "REALTIME_CONSUMER": (
        "worker's name (in logs, leases and the group's consumers, plus a random suffix per start)"
    ),
    "REALTIME_BATCH_SIZE": "entries a worker reads per partition per round trip",
    "REALTIME_BLOCK_MS": (
        "how long an idle worker waits for new entries per round (also how soon it notices a stop)"
    ),
    "REALTIME_LEASE_MS": (
        "partition lease TTL: a dead worker's partitions move after at most this (plus a third "
        "of it); renewed every third"
    ),
    "REALTIME_MAX_ATTEMPTS": (
        "an entry that failed this many times in a row, or was delivered this many times "
        "without completing, goes to the dead-letter stream"
    ),
    "REALTIME_PIPELINES": (
        "pipelines file, YAML or JSON (see [Pipelines](pipelines.md)); unset: the built-in default"
    ),
    "REALTIME_CHECKPOINT_MS": (
        "how often a worker saves window state (and acks the entries it covers); a new owner "
        "replays at most this much"
    ),
    "REALTIME_REDIS_TIMEOUT_S": "Redis connect/read timeout",
    "REALTIME_REDIS_TLS_VERIFY": (
        "`0`: a `rediss://` REDIS_URL's certificate is not verified (encrypted, but open to "
        "a man in the middle): for a provider that serves a self-signed one and sets "
        "REDIS_URL itself, such as Heroku Redis; otherwise give the CA with "
        "`?ssl_ca_certs=` in the URL"
    ),
    "REALTIME_REDIS_CLUSTER": (
        "`1`: `REDIS_URL` (`redis://` or `rediss://`) names any node of a Redis Cluster; see "
        "[Redis Cluster](scaling.md#redis-cluster)"
    ),
    "REALTIME_WAIT_REPLICAS": (
        "ingest answers 202 only once this many replicas have the events (Redis `WAIT`, up to "
        "half of `REALTIME_REDIS_TIMEOUT_S`; else 503): see [Redis Sentinel "
        "failover](scaling.md#redis-sentinel-failover)"
    ),
    "REALTIME_LOG_LEVEL": "level of the project's own loggers (`realtime.*`, `processors.*`)",
    "REALTIME_LIBRARY_LOG_LEVEL": (
        "level of every other library's loggers (redis, aiohttp, socketio, engineio)"
    ),
    "REALTIME_LOG_FORMAT": (
        "`json`: one JSON object per log line (see [Logging](operations.md#logging))"
    ),
    "REALTIME_ADMIN_USER": (
        "with `REALTIME_ADMIN_PASSWORD`: turns the [Admin UI](operations.md#socketio-admin-ui) on"
    ),
    "REALTIME_ADMIN_PASSWORD": "the Admin UI's password (a secret: never logged)",
    "REALTIME_ADMIN_READ_ONLY": "`0` lets the Admin UI join/leave/disconnect clients and emit",
    "REALTIME_ADMIN_ORIGIN": "browser origin allowed to open `/admin` (only); empty: none",
    "REALTIME_METRICS_PORT": (
        "private port where web and worker serve `/metrics`; `0`: none (see "
        "[Metrics](operations.md#metrics))"
    ),
    "REALTIME_DRAIN_S": (
        "on SIGTERM the web disconnects its clients spread over most of this and exits before "
        "it is up (see [Shutdown](operations.md#health-checks-and-shutdown)); `0`: all at once"
    ),
    "REALTIME_EXTENSIONS": (
        "comma-separated `pkg.module:callable`s the web imports at start and calls with the "
        "Socket.IO server and the aiohttp app: custom events, namespaces and routes (see "
        "[Extensions](extensions.md))"
    ),
}
