"""Names shared across processes: Redis keys, pub/sub channels and Socket.IO event names.

Every process builds these from the configured prefix through this module, so a web
instance, a worker and a test always agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass

UPDATE_EVENT = "update"
SUBSCRIBE_EVENT = "subscribe"
UNSUBSCRIBE_EVENT = "unsubscribe"
NAMESPACE = "/"
# Server to client, just before the server ends a connection: {"code", "message"}.
CLOSING_EVENT = "closing"
SLOW_CLIENT = "slow_client"  # its `code` when the client could not keep up
TOKEN_EXPIRED = "token_expired"  # its `code` when the client's token expired


@dataclass(frozen=True)
class Keys:
    prefix: str = "rt:"

    def ingest(self, partition: int) -> str:
        """The ingest stream of one partition: producers XADD, the worker group reads."""
        return f"{self.prefix}ingest:{partition}"

    def topic(self, topic: str) -> str:
        """A topic's history stream; its entry ids are the topic's event ids."""
        return f"{self.prefix}topic:{topic}"

    def dead_letters(self) -> str:
        """Entries the worker gave up on, with the error."""
        return f"{self.prefix}dead"

    def lease(self, partition: int) -> str:
        """Who owns a partition: the owner's token, with a TTL the owner keeps renewing."""
        return f"{self.prefix}lease:{partition}"

    def windows(self, partition: int) -> str:
        """A partition's window checkpoint: a hash of window states and ingest offsets
        (processors/aggregator.py)."""
        return f"{self.prefix}windows:{partition}"

    def workers(self) -> str:
        """Live workers: a sorted set of owner tokens scored by heartbeat expiry (ms)."""
        return f"{self.prefix}workers"

    def idempotency(self, topic: str, key: str) -> str:
        """The ingest id an event with this idempotency key was first accepted under."""
        return f"{self.prefix}idem:{topic}:{key}"

    def ingest_rate(self, key_name: str) -> str:
        """Events a publish key (named by a hash prefix, never the key) sent this second."""
        return f"{self.prefix}rate:{key_name}"

    def fanout_channel(self) -> str:
        """The pub/sub channel every web instance listens on: python-socketio's own
        messages between instances (emits to a client, disconnects, rooms), and any room
        emit that is not a topic's `update`."""
        return f"{self.prefix}fanout"

    def topic_channel(self, topic: str) -> str:
        """The pub/sub channel of one topic's `update` emits: only the web instances with
        a local subscriber of the topic are subscribed to it. (The one place this name is
        built: a move to sharded pub/sub or hash tags changes it here.)"""
        return f"{self.prefix}fanout:{topic}"
