"""Connection-state recovery, the bookkeeping part of delivery: where each session's
topics stand, as a log a client's offset can be read against. Pure: no I/O, no clock
(`realtime/delivery/sessions.py` writes the log and the session records to Redis).

Every `update` packet carries a string offset as its last argument (socket.io's
connection-state recovery): `"<epoch>.<n>"`, the instance's epoch and the number of an
entry in its log. One packet that many connections get (a fan-out batch) carries one
offset, so the websocket fast path still encodes it once for all of them.

The log (one per instance and epoch) has an entry per change that a client's position
depends on, numbered 1, 2, 3...:

- `F`: a frame of one topic sent up to an event id: to one connection (its tag), to
  several (a page of history), or shared (no tag: to every connection *live* on the
  topic when the entry was made, the fan-out fast path);
- `S` subscribe (absolute position, max_rate), `P` its position set, `U` unsubscribe;
- `W` the subscription also watches presence (until its next `S`: a subscribe again
  without `presence` stops it); instances that predate it skip it;
- `L` the subscription went live (shared frames reach it from now), `O` it went off
  (a catch-up or a slow client: they no longer do).

A connection's offset n says which frames it got: every frame it was sent with an entry
up to n, none after (packets on one connection are sent with increasing offsets; a
shared frame whose hand-out was interleaved with anything else is re-numbered, see
`Recorder.shared`). So its positions are a session checkpoint (topics, positions, live
flags at some entry) plus the entries after it up to n: `replay`. A connection's state
at any moment is the same computation done as entries are made (`Recorder`), which is
what checkpoints write. Offsets are tens of bytes whatever the number of topics.

Design notes: docs/protocol.md (Connection-state recovery).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from realtime.core.streamids import StreamId, StreamIdError, format_id, parse_id

FRAME, SUBSCRIBE, POSITION, UNSUBSCRIBE, LIVE, OFF = "F", "S", "P", "U", "L", "O"
WATCH = "W"
RESET = "R"  # where a live subscription truly is, before a frame made mid-hand-out
NONE = "-"
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_epoch() -> str:
    """An instance's epoch: names its log, so offsets of a restarted instance never meet
    an old log."""
    return "".join(secrets.choice(_ALNUM) for _ in range(8))


def new_pid() -> str:
    """A session id (socket.io's private id: never shown to other clients)."""
    return secrets.token_urlsafe(12).replace("-", "a").replace("_", "b")


@dataclass(frozen=True)
class Offset:
    epoch: str
    n: int

    def __str__(self) -> str:
        return f"{self.epoch}.{self.n:x}"

    @classmethod
    def parse(cls, value: object) -> Offset | None:
        if not isinstance(value, str) or len(value) > 40:
            return None
        epoch, _, n = value.partition(".")
        if not epoch.isalnum() or not n or len(n) > 16:
            return None
        try:
            return cls(epoch, int(n, 16))
        except ValueError:
            return None


def resume_token(pid: str, offset: Offset) -> str:
    """The resume token of SDKs without recovery code: `<pid>.<offset>`."""
    return f"{pid}.{offset}"


def parse_resume(auth: Any) -> tuple[str, Offset | None] | None:
    """The session a CONNECT asks to recover, from its auth payload: socket.io-client's
    `{pid, offset}` (offset absent: it got no `update` yet) or `{resume: token}`."""
    if not isinstance(auth, Mapping):
        return None
    token = auth.get("resume")
    if isinstance(token, str) and len(token) <= 80:
        token_pid, _, rest = token.partition(".")
        offset = Offset.parse(rest)
        if token_pid.isalnum() and offset is not None:
            return token_pid, offset
        return None
    pid = auth.get("pid")
    if not isinstance(pid, str) or not pid.isalnum() or len(pid) > 40:
        return None
    given = auth.get("offset")
    if given is None:
        return pid, None
    parsed = Offset.parse(given)
    return None if parsed is None else (pid, parsed)


@dataclass(slots=True)
class TopicState:
    """One subscription of a session, as far as recovery needs it."""

    pos: StreamId | None  # everything up to here was sent (None: no position, live-only)
    live: bool = False  # shared frames of the topic reach it
    max_rate: float | None = None
    since: int = 0  # the entry it went live at (`Recorder` only: not written)
    watch: bool = False  # it gets `presence` events

    def copy(self) -> TopicState:
        return TopicState(self.pos, self.live, self.max_rate, self.since, self.watch)

    def advance(self, to: StreamId) -> None:
        if self.pos is None or to > self.pos:
            self.pos = to


State = dict[str, TopicState]


def dump_state(state: State) -> dict[str, list[Any]]:
    return {
        t: [None if s.pos is None else format_id(s.pos), s.live, s.max_rate]
        for t, s in state.items()
    }


def dump_watches(state: State) -> list[str]:
    """The topics watched for presence: a record field of its own (`w`), which instances
    that predate it ignore."""
    return sorted(t for t, s in state.items() if s.watch)


def load_state(data: Mapping[str, Any], watches: Iterable[str] = ()) -> State:
    out: State = {}
    for topic, (pos, live, max_rate) in data.items():
        out[topic] = TopicState(None if pos is None else parse_id(pos), bool(live), max_rate)
    for topic in watches:
        if topic in out:
            out[topic].watch = True
    return out


@dataclass(frozen=True)
class Entry:
    kind: str
    tags: str  # NONE (shared), or comma-separated connection tags
    topic: str
    pos: str  # an event id or NONE
    rate: str = NONE

    def encode(self) -> str:
        return f"{self.kind} {self.tags} {self.topic} {self.pos} {self.rate}"

    @classmethod
    def decode(cls, line: str) -> Entry:
        kind, tags, topic, pos, rate = line.split(" ")
        return cls(kind, tags, topic, pos, rate)

    def concerns(self, tag: str) -> bool:
        return self.tags == NONE or tag in self.tags.split(",")


def apply(state: State, entry: Entry, n: int = 0, *, frames: bool = True) -> None:
    """One log entry that concerns a connection, applied to its state (`replay`, and
    `Recorder` as entries are made). `frames=False`: the client got no frame at all,
    so only what it asked for counts (subscriptions and where they start)."""
    kind, topic = entry.kind, entry.topic
    pos = None if entry.pos == NONE else parse_id(entry.pos)
    if kind == WATCH:
        if topic in state:
            state[topic].watch = True
        return
    if kind == SUBSCRIBE:
        rate = None if entry.rate == NONE else float(entry.rate)
        state[topic] = TopicState(pos, False, rate)
        return
    if kind == UNSUBSCRIBE:
        state.pop(topic, None)
        return
    current = state.get(topic)
    if current is None:
        return
    if kind == POSITION:
        current.pos = pos
    elif not frames:
        return
    elif kind == FRAME:
        if (entry.tags != NONE or current.live) and pos is not None:
            current.advance(pos)
    elif kind in (LIVE, OFF, RESET):
        # The delivery's own cursor (what it handed the connection), hence absolute; a
        # max_rate subscription's cursor runs ahead of what its pacing sent.
        if kind != RESET:
            current.live = kind == LIVE and current.max_rate is None
            current.since = n
        if current.max_rate is None:
            current.pos = pos


class LogGap(Exception):
    """The log does not hold every entry up to the offset (trimmed, or lost with a
    killed instance before it was written): the session cannot be recovered exactly."""


def replay(
    state: State,
    tag: str,
    start: int,
    chunks: Iterable[tuple[int, list[str]]],
    upto: int | None,
) -> State:
    """The state after `start` (a checkpoint's entry number) moved on by the log's
    entries that concern connection `tag`: frames up to `upto`, the client's offset (the
    last frame it got; None: it got none), and what the client asked for (subscribe,
    unsubscribe) up to the log's end, for it may have asked after its last frame.
    `chunks`: (first entry number, encoded entries) in log order. Raises LogGap if an
    entry up to `upto` is missing."""
    out = {t: s.copy() for t, s in state.items()}
    expected = None
    for first, lines in chunks:
        if expected is not None and first != expected:
            raise LogGap(f"entries {expected}..{first - 1} are missing")
        if expected is None and first > start + 1:
            raise LogGap(f"entries {start + 1}..{first - 1} are missing")
        expected = first + len(lines)
        for n, line in enumerate(lines, first):
            if n <= start:
                continue
            kind, tags, topic, pos, rate = line.split(" ")
            # Most of a busy log is other topics' shared frames: skipped before any
            # parsing, since a record may be a refresh interval behind (sessions.py).
            if tags == NONE:
                if kind == FRAME and topic not in out:
                    continue
            elif tag not in tags.split(","):
                continue
            entry = Entry(kind, tags, topic, pos, rate)
            apply(out, entry, n, frames=upto is not None and n <= upto)
    if upto is not None and (expected is None or expected <= upto) and upto > start:
        raise LogGap(f"the log ends before entry {upto}")
    return out


# A checkpoint as the recorder keeps it, until written: (n, s, a, topics, watches,
# final), the record's fields besides the epoch and the tag (`Recorder._record`).
# Tuples and shared empty maps: a dict per checkpoint, three per connection, were about
# 0.7 KiB of an idle connection (tracemalloc, `python -m bench.idle_heap`).
Kept = tuple[int, int, str, dict[str, list[Any]], list[str], bool]
_NO_TOPICS: dict[str, list[Any]] = {}  # never changed: records are only encoded
_NO_WATCHES: list[str] = []  # the same


@dataclass(slots=True)
class Connection:
    tag: str
    pid: str
    state: State
    written: str | None = None  # the checkpoint last written (to skip unchanged ones)
    closed: bool = False
    # its session record: where it came from, its first, newest and previous checkpoints
    origin: str | None = None
    base: Kept | None = None
    cp: Kept | None = None
    prev: Kept | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A session record to write: its pid, owner and the JSON-able record."""

    pid: str
    owner: str
    record: dict[str, Any]
    final: bool


Position = Callable[[str, str], "StreamId | None"]


@dataclass
class Recorder:
    """The instance's log as it is made, and each connection's state from it.

    `position(sid, topic)`: where delivery's cursor of a subscription stands (what it
    handed the connection), for `RESET` entries."""

    position: Position
    notify: Callable[[], None] = lambda: None  # entries are pending (none were before)
    epoch: str = field(default_factory=new_epoch)
    n: int = 0  # entries made so far
    pending: list[str] = field(default_factory=list)  # made, not yet written
    pending_from: int = 1  # the number of pending[0]
    flushed_id: str = "0-0"  # the log stream's id of the last write (see sessions.py)
    _connections: dict[str, Connection] = field(default_factory=dict)  # sid ->
    _tags: int = 0
    # topic -> (entry, id) of the newest shared frame: applied lazily to live connections
    _shared: dict[str, tuple[int, StreamId]] = field(default_factory=dict)
    _handing_out: set[str] = field(default_factory=set)  # topics of shared frames
    # connections whose record is due whatever changed: new ones (first record) and
    # closed ones (last record), so `checkpoints(changed=False)` need not scan them all
    _fresh: set[str] = field(default_factory=set)
    # the round of checkpoints under way (`checkpoints` with a `limit`): the sids still
    # to look at, from `_round_at` on, and whether each is due even if unchanged
    _round: list[str] = field(default_factory=list)
    _round_at: int = 0
    _round_all: bool = False

    def _add(self, entry: Entry) -> int:
        self.n += 1
        self.pending.append(entry.encode())
        if len(self.pending) == 1:
            self.notify()
        return self.n

    def offset(self) -> Offset:
        return Offset(self.epoch, self.n)

    def take_pending(self) -> tuple[int, list[str]]:
        out = self.pending_from, self.pending
        self.pending, self.pending_from = [], self.n + 1
        return out

    # -- connections ---------------------------------------------------------------------

    def connect(self, sid: str, pid: str, state: State, origin: str | None) -> Offset:
        """A connection of session `pid` starts from `state` (empty, or recovered);
        returns its starting offset (the resume token's, before any frame)."""
        self._tags += 1
        tag = format(self._tags, "x")
        # (A session may have an old connection here still, not yet known to be gone,
        # when its client comes back: each writes its own record.)
        base = self._kept(state, self.n, False)
        self._connections[sid] = Connection(tag, pid, state, origin=origin, base=base, cp=base)
        self._fresh.add(sid)
        return self.offset()

    def pid(self, sid: str) -> str | None:
        conn = self._connections.get(sid)
        return None if conn is None else conn.pid

    def record(self, sid: str) -> Checkpoint | None:
        """The connection's session record as it starts (written at once on recovery)."""
        conn = self._connections.get(sid)
        if conn is None:
            return None
        return Checkpoint(conn.pid, f"{self.epoch}:{conn.tag}", self._record(conn), False)

    def disconnected(self, sid: str) -> None:
        conn = self._connections.get(sid)
        if conn is not None:
            conn.closed = True
            self._fresh.add(sid)

    def _kept(self, state: State, since: int, final: bool) -> Kept:
        topics = dump_state(state) or _NO_TOPICS
        return (self.n, since, self.flushed_id, topics, dump_watches(state) or _NO_WATCHES, final)

    def _record(self, conn: Connection) -> dict[str, Any]:
        """The connection's session record, as written to Redis."""

        def checkpoint(kept: Kept | None) -> dict[str, Any] | None:
            if kept is None:
                return None
            n, s, a, t, w, f = kept
            return {"e": self.epoch, "n": n, "s": s, "a": a, "c": conn.tag, "t": t, "w": w, "f": f}

        return {
            "base": checkpoint(conn.base),
            "origin": conn.origin,
            "prev": checkpoint(conn.prev),
            "cp": checkpoint(conn.cp),
        }

    def _state(self, conn: Connection) -> State:
        """The connection's state now: its own entries and the shared frames since."""
        for topic, state in conn.state.items():
            shared = self._shared.get(topic)
            if state.live and shared is not None and shared[0] > state.since:
                state.advance(shared[1])
        return conn.state

    def checkpoints(
        self, *, changed: bool = True, all_due: bool = False, limit: int | None = None
    ) -> list[Checkpoint]:
        """Records to write now: each new connection's first, each closed one's last
        (then it is forgotten) and, with `changed`, each one whose state changed since
        its last write (every one when `all_due`, to keep its TTL). Made after every
        pending entry was taken for writing, at entry `n`. A record keeps its newest
        checkpoint (`cp`), the one before (`prev`, for a client that got less than was
        sent) and the first (`base`); each holds from entry `s` (its state was the same
        since) to `n`.

        `changed` starts a round over every connection; with a `limit`, each call goes
        on with at most that many of it (`rounding`: some are left; `changed` then goes
        on with it, and without a limit starts one afresh), so a round over
        thousands of connections is many short runs the event loop can interleave
        hand-outs with, not one of tens of milliseconds (`python -m bench.latency`'s
        p99). Each call's records are still made at one entry, after its entries."""
        out = []
        if changed and (limit is None or not self.rounding):
            self._round, self._round_at, self._round_all = list(self._connections), 0, all_due
        elif changed:  # due again before the round ended: it goes on (none is left out)
            self._round_all |= all_due
        end = len(self._round) if limit is None else self._round_at + limit
        part = self._round[self._round_at : end]
        self._round_at += len(part)
        if not self.rounding:
            self._round, self._round_at = [], 0
        # the round's part and the new and the closed (a flush per fan-out hand-out
        # comes here for them alone), in connect order
        in_round = set(part)
        fresh = self._fresh - in_round
        found = ((sid, self._connections.get(sid)) for sid in (*part, *fresh))
        due = [(sid, conn) for sid, conn in found if conn is not None]
        if fresh:
            due.sort(key=lambda item: int(item[1].tag, 16))
        self._fresh.clear()
        all_due = self._round_all
        for sid, conn in due:
            if not (sid in in_round or conn.closed or conn.written is None):
                continue
            state = self._state(conn)
            text = repr((dump_state(state), dump_watches(state)))
            if text == "({}, [])":
                text = "({}, [])"  # one shared string for most
            if text != conn.written or (all_due and sid in in_round) or conn.closed:
                assert conn.cp is not None
                # final: the connection's entries end here
                if text == conn.written:
                    new = self._kept(conn.state, conn.cp[1], conn.closed)
                else:
                    new = self._kept(conn.state, self.n, conn.closed)
                    conn.prev = conn.cp
                conn.cp = new
                conn.written = text
                out.append(
                    Checkpoint(
                        conn.pid, f"{self.epoch}:{conn.tag}", self._record(conn), conn.closed
                    )
                )
            if conn.closed:
                del self._connections[sid]
        return out

    @property
    def rounding(self) -> bool:
        """A round of checkpoints is under way: `checkpoints(changed=False, limit=...)`
        goes on with it."""
        return self._round_at < len(self._round)

    # -- entries -------------------------------------------------------------------------

    def shared(self, topic: str, last: StreamId, since: int | None = None) -> str:
        """A fan-out frame of `topic` up to `last`, for every connection live on it;
        returns its offset. The topic counts as being handed out until `handed_out`
        (several frames may be numbered together, to be written in one round trip).
        With `since` (the entry of the same hand-out's frame so far): that offset
        again if nothing was logged since, so the frame stays the same bytes; else a
        new entry (a connection may have been sent something numbered after it, and
        its offsets must increase)."""
        self._handing_out.add(topic)
        if since is not None and since == self.n:
            return str(Offset(self.epoch, since))
        # `_add(Entry(FRAME, NONE, topic, ...))` spelled out: one per fan-out batch
        self.n = n = self.n + 1
        self.pending.append(f"{FRAME} {NONE} {topic} {last[0]}-{last[1]} {NONE}")
        if len(self.pending) == 1:
            self.notify()
        old = self._shared.get(topic)
        if old is None or last >= old[1]:
            self._shared[topic] = (n, last)
        return f"{self.epoch}.{n:x}"

    def handed_out(self) -> None:
        """The shared frames' hand-out is over (every member had them or was skipped)."""
        self._handing_out.clear()

    def frame(self, sids: list[str], topic: str, last: StreamId) -> str | None:
        """A frame of `topic` up to `last` to some connections; returns its offset.

        While shared frames are being handed out (between two slices of a big room, or
        of the frames numbered together), a connection not reached yet must not count
        as having one: its entry says it has if the connection is live on that topic,
        and this frame's offset comes after it. So a `RESET` entry with where the
        connection truly is goes first (for a topic already handed out it says what
        the entries say: harmless)."""
        tags = []
        handing_out = self._handing_out
        for sid in sids:
            conn = self._connections.get(sid)
            if conn is None:
                continue
            tags.append(conn.tag)
            if handing_out:
                for out in sorted(handing_out.intersection(conn.state)):
                    if conn.state[out].live:
                        self.changed(sid, RESET, out, self.position(sid, out), None)
            state = conn.state.get(topic)
            if state is not None:
                state.advance(last)
        if not tags:
            return None
        self._add(Entry(FRAME, ",".join(tags), topic, format_id(last)))
        return str(self.offset())

    def watched(self, sid: str, topic: str) -> None:
        """The subscription of `topic` watches presence now (after its `S` entry)."""
        conn = self._connections.get(sid)
        if conn is not None:
            entry = Entry(WATCH, conn.tag, topic, NONE)
            apply(conn.state, entry, self._add(entry))

    def changed(
        self, sid: str, kind: str, topic: str, pos: StreamId | None, max_rate: float | None
    ) -> None:
        """A subscription changed (`Subscriptions` reports it): S, P, U, L, O or R."""
        conn = self._connections.get(sid)
        if conn is None:
            return
        if kind in (LIVE, OFF, RESET):
            self._state(conn)  # shared frames so far count before the change
        entry = Entry(
            kind,
            conn.tag,
            topic,
            NONE if pos is None else format_id(pos),
            NONE if max_rate is None else repr(float(max_rate)),
        )
        apply(conn.state, entry, self._add(entry))


def resolve(
    record: Mapping[str, Any], offset: Offset | None
) -> tuple[dict[str, Any], int | None] | None:
    """Which checkpoint of a session record to replay the log from for a client at
    `offset`, and up to which entry its frames count (None: it got none). None if no
    checkpoint fits."""
    base = record.get("base")
    if not base:
        return None
    if offset is None:
        return base, None
    if str(offset) == record.get("origin"):
        return base, base["n"]  # recovered, and nothing got since
    fitting = []
    for r in (record.get("cp"), record.get("prev"), base):
        if not r or r["e"] != offset.epoch:
            continue
        if r["s"] <= offset.n <= r["n"]:
            return r, r["n"]  # the state was the same all along
        if r["n"] <= offset.n:
            fitting.append(r)
    if not fitting:
        return None
    return max(fitting, key=lambda r: int(r["n"])), offset.n


def positions(state: State) -> dict[str, tuple[StreamId, float | None, bool]] | None:
    """Where to resume each topic, its max_rate and whether it watches presence; None if
    one has no position (cannot be replayed)."""
    out = {}
    for topic, s in state.items():
        if s.pos is None:
            return None
        out[topic] = (s.pos, s.max_rate, s.watch)
    return out


__all__ = ["LogGap", "Offset", "Recorder", "StreamIdError"]
