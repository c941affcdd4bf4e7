"""Names shared across processes: Redis keys, pub/sub channels and Socket.IO event names.

Every process builds these from the configured prefix through this module, so a web
instance, a worker and a test always agree on them.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from realtime.core.topics import partition_of

if TYPE_CHECKING:
    from realtime.core.settings import Settings

UPDATE_EVENT = "update"
SUBSCRIBE_EVENT = "subscribe"
UNSUBSCRIBE_EVENT = "unsubscribe"
NAMESPACE = "/"
# Server to client, just before the server ends a connection: {"code", "message"}.
CLOSING_EVENT = "closing"
SLOW_CLIENT = "slow_client"  # its `code` when the client could not keep up
TOKEN_EXPIRED = "token_expired"  # its `code` when the client's token expired
# Server to client: a topic's viewer count changed, `{"topic", "count", "at"}`; also the
# `method` of the note between web instances that a topic's count changed.
PRESENCE_EVENT = "presence"

# The fields of a history entry (`rt:topic:{topic}`): written by the worker, read by the web.
HISTORY_TS_FIELD = "ts"
HISTORY_DATA_FIELD = "data"


@functools.cache
def partition_tag(partition: int, partitions: int) -> str:
    """The hash tag of a partition's keys in cluster mode: `{p.n}`, with the smallest n
    whose slot lies in the p-th of `partitions` equal ranges of the slot space."""
    if not 0 <= partition < partitions <= REDIS_CLUSTER_HASH_SLOTS:
        raise ValueError(f"partition {partition} of {partitions}")
    low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
    high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
    for n in itertools.count():
        tag = f"{{{partition}.{n}}}"
        if low <= key_slot(tag.encode()) < high:
            return tag
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class Keys:
    prefix: str = "rt:"
    cluster: bool = False
    partitions: int = 0  # needed in cluster mode: a topic's keys carry its partition's tag

    @classmethod
    def of(cls, settings: Settings) -> Keys:
        """The keys a process with these settings uses (single node or cluster)."""
        return cls(settings.prefix, settings.redis_cluster, settings.partitions)

    def _tag(self, partition: int) -> str:
        return partition_tag(partition, self.partitions)

    def _topic_tag(self, topic: str) -> str:
        return self._tag(partition_of(topic, self.partitions))

    def ingest(self, partition: int) -> str:
        """The ingest stream of one partition: producers XADD, the worker group reads."""
        if self.cluster:
            return f"{self.prefix}ingest:{self._tag(partition)}"
        return f"{self.prefix}ingest:{partition}"

    def topic(self, topic: str) -> str:
        """A topic's history stream; its entry ids are the topic's event ids."""
        if self.cluster:
            return f"{self.prefix}topic:{self._topic_tag(topic)}:{topic}"
        return f"{self.prefix}topic:{topic}"

    def dead_letters(self, partition: int = 0) -> str:
        """Entries the worker gave up on, with the error: one stream, or one per
        partition in cluster mode (`dead_letter_streams` lists them)."""
        if self.cluster:
            return f"{self.prefix}dead:{self._tag(partition)}"
        return f"{self.prefix}dead"

    def dead_letter_streams(self) -> list[str]:
        if self.cluster:
            return [self.dead_letters(p) for p in range(self.partitions)]
        return [self.dead_letters()]

    def lease(self, partition: int) -> str:
        """Who owns a partition: the owner's token, with a TTL the owner keeps renewing."""
        if self.cluster:
            return f"{self.prefix}lease:{self._tag(partition)}"
        return f"{self.prefix}lease:{partition}"

    def windows(self, partition: int) -> str:
        """A partition's window checkpoint: a hash of window states and ingest offsets
        (processors/pipelines/partition_windows.py)."""
        if self.cluster:
            return f"{self.prefix}windows:{self._tag(partition)}"
        return f"{self.prefix}windows:{partition}"

    def attempts(self, partition: int) -> str:
        """A partition's unfinished attempts: a hash of entry id -> attempts begun in
        recovery (and `<id>:error` -> the last error), cleared by the commit that
        finishes the entry. Counts what a delivery count cannot: the runner that crashed
        is restarted by the same worker, which claims its own entries again."""
        if self.cluster:
            return f"{self.prefix}attempts:{self._tag(partition)}"
        return f"{self.prefix}attempts:{partition}"

    def heartbeat(self, consumer: str) -> str:
        """A worker's liveness: exists while its main loop runs (`realtime process --check`)."""
        return f"{self.prefix}heartbeat:{consumer}"

    def workers(self) -> str:
        """Live workers: a sorted set of owner tokens scored by heartbeat expiry (ms)."""
        return f"{self.prefix}workers"

    def idempotency(self, topic: str, key: str) -> str:
        """The ingest id an event with this idempotency key was first accepted under.

        Both parts come from the producer and both may contain ':', so the topic is
        length-prefixed: `idempotency:<len(topic)>:<topic>:<key>` names one pair only.
        (The family is new: no name of it equals one of `legacy_idempotency`.)"""
        name = f"{len(topic)}:{topic}:{key}"
        if self.cluster:
            return f"{self.prefix}idempotency:{self._topic_tag(topic)}:{name}"
        return f"{self.prefix}idempotency:{name}"

    def legacy_idempotency(self, topic: str, key: str) -> str:
        """The ambiguous layout before (`idem:<topic>:<key>`, where (a:b, c) and (a, b:c)
        met): only read, so keys stored by older versions still deduplicate until they
        expire (`REALTIME_IDEMPOTENCY_TTL_S` after the upgrade; then this can go)."""
        if self.cluster:
            return f"{self.prefix}idem:{self._topic_tag(topic)}:{topic}:{key}"
        return f"{self.prefix}idem:{topic}:{key}"

    def ingest_rate(self, key_name: str) -> str:
        """Events a publish key (named by a hash prefix, never the key) sent this second."""
        return f"{self.prefix}rate:{key_name}"

    def recovery_log(self, epoch: str) -> str:
        """A web instance's connection-state recovery log (one per process start)."""
        return f"{self.prefix}rlog:{epoch}"

    def session(self, pid: str) -> str:
        """A recoverable Socket.IO session: its owner and checkpoints."""
        return f"{self.prefix}session:{pid}"

    def auth_failures(self, kind: str, subject: str) -> tuple[str, str]:
        """A credential throttle's failure counter and lockout for one subject of `kind`
        (`realtime.core.throttle`): `subject` (a client address or a credential) only as a
        hash, so no address or username is stored and any text names one pair of keys; in
        one hash tag, so a cluster keeps the pair on one node."""
        digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
        base = f"{self.prefix}auth:{kind}:{{{digest}}}"
        return f"{base}:failures", f"{base}:lockout"

    def fanout_channel(self) -> str:
        """The pub/sub channel every web instance listens on: python-socketio's own
        messages between instances (emits to a client, disconnects, rooms), and any room
        emit that is not a topic's `update`."""
        return f"{self.prefix}fanout"

    def topic_channel(self, topic: str) -> str:
        """The pub/sub channel of one topic's `update` emits: only the web instances with
        a local subscriber of the topic are subscribed to it. In cluster mode a shard
        channel (SPUBLISH / SSUBSCRIBE) in the slot of the topic's partition, so the
        worker's commit script can publish it and it lives on that partition's shard."""
        if self.cluster:
            return f"{self.prefix}fanout:{self._topic_tag(topic)}:{topic}"
        return f"{self.prefix}fanout:{topic}"

    def directory(self, partition: int) -> tuple[str, str, str]:
        """The topic directory of what one partition's owner writes: a sorted set of
        topic names (all scored 0, for ZRANGEBYLEX), a sorted set of topic -> last write
        (Redis ms, for pruning the idle), and a hash of topic -> its last event and rate
        (`realtime/core/directory.py`). Members are topic names, so nothing else is encoded."""
        tag = self._tag(partition) if self.cluster else str(partition)
        return (
            f"{self.prefix}directory:{tag}",
            f"{self.prefix}directory-seen:{tag}",
            f"{self.prefix}directory-info:{tag}",
        )

    def presence(self, topic: str) -> str:
        """A topic's viewers: a hash of web instance id -> its local viewer count, each
        field counted while its instance is live (`presence_instances`)."""
        if self.cluster:
            return f"{self.prefix}presence:{self._topic_tag(topic)}:{topic}"
        return f"{self.prefix}presence:{topic}"

    def presence_members(self, topic: str, instance: str) -> str:
        """One instance's viewers of a topic by their token's `sub`: a hash of sub ->
        count (for member lists; only viewers whose token has a `sub`)."""
        if self.cluster:
            return f"{self.prefix}presence-members:{self._topic_tag(topic)}:{topic}:{instance}"
        return f"{self.prefix}presence-members:{topic}:{instance}"

    def presence_instances(self) -> str:
        """Live web instances: a sorted set of instance ids scored by heartbeat expiry (ms)."""
        return f"{self.prefix}presence-instances"

    def presence_topics(self, instance: str) -> str:
        """The topics whose presence hash holds a field of `instance`: what is removed
        when the instance is found dead."""
        return f"{self.prefix}presence-topics:{instance}"
