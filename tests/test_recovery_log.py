"""The recovery log's pure logic (realtime/delivery/recovery.py): offsets, resume
tokens, and that a client's positions read back from the log at its offset are exactly
what it was sent up to that frame, whatever came after."""

from __future__ import annotations

import pytest

from realtime.core.streamids import StreamId
from realtime.delivery.recovery import (
    LIVE,
    OFF,
    POSITION,
    SUBSCRIBE,
    LogGap,
    Offset,
    Recorder,
    State,
    TopicState,
    dump_state,
    load_state,
    parse_resume,
    positions,
    replay,
    resolve,
    resume_token,
)

pytestmark = pytest.mark.unit


def test_offsets_and_resume_tokens_read_back() -> None:
    offset = Offset("abc123de", 0x1F3)
    assert str(offset) == "abc123de.1f3"
    assert Offset.parse(str(offset)) == offset
    for bad in (None, 7, "", "abc", "abc.", "a-b.1", "abc.zz", "abc." + "f" * 17):
        assert Offset.parse(bad) is None, bad
    token = resume_token("Pid42", offset)
    assert parse_resume({"resume": token, "token": "jwt"}) == ("Pid42", offset)
    assert parse_resume({"pid": "Pid42", "offset": "abc123de.1f3"}) == ("Pid42", offset)
    assert parse_resume({"pid": "Pid42"}) == ("Pid42", None)  # no `update` yet
    refused: list[object] = [None, "x", {}, {"pid": 3}, {"pid": "a.b"}, {"resume": "nodots"}]
    refused.append({"pid": "P", "offset": "bad"})
    for auth in refused:
        assert parse_resume(auth) is None, auth


class Log:
    """A recorder and everything it logged, read back as the Redis side would."""

    def __init__(self) -> None:
        self.positions: dict[tuple[str, str], StreamId | None] = {}
        self.recorder = Recorder(lambda sid, topic: self.positions.get((sid, topic)))
        self.chunks: list[tuple[int, list[str]]] = []

    def connect(self, sid: str) -> dict[str, object]:
        """A new session on connection `sid`: its record as it starts."""
        self.recorder.connect(sid, sid + "pid", {}, None)
        checkpoint = self.recorder.record(sid)
        assert checkpoint is not None
        return checkpoint.record

    def fanout(self, topic: str, last: StreamId) -> str:
        """A whole fan-out hand-out of one frame; its offset."""
        offset = self.recorder.shared(topic, last)
        self.recorder.handed_out()
        return offset

    def flush(self) -> None:
        first, lines = self.recorder.take_pending()
        if lines:
            self.chunks.append((first, lines))

    def at(self, record: dict[str, object], offset: str | None) -> State:
        self.flush()
        parsed = None if offset is None else Offset.parse(offset)
        picked = resolve(record, parsed)
        assert picked is not None
        checkpoint, upto = picked
        state = load_state(checkpoint["t"], checkpoint.get("w", ()))
        return replay(state, checkpoint["c"], checkpoint["n"], self.chunks, upto)


def sub(log: Log, sid: str, topic: str, pos: StreamId, *, live: bool = True) -> None:
    log.recorder.changed(sid, SUBSCRIBE, topic, None, None)
    log.recorder.changed(sid, POSITION, topic, pos, None)
    log.positions[(sid, topic)] = pos
    if live:
        log.recorder.changed(sid, LIVE, topic, pos, None)


def pos_of(state: State) -> dict[str, StreamId | None]:
    return {t: s.pos for t, s in state.items()}


def test_a_clients_positions_are_what_it_got_up_to_its_offset() -> None:
    log = Log()
    base = log.connect("s1")
    sub(log, "s1", "a", (1, 0))
    sub(log, "s1", "b", (5, 0))
    got_a = log.fanout("a", (2, 0))  # fan-out frames, shared by every live member
    got_b = log.fanout("b", (6, 0))
    log.fanout("a", (3, 0))  # sent, but lost in the drop
    record = base
    assert pos_of(log.at(record, got_a)) == {"a": (2, 0), "b": (5, 0)}
    assert pos_of(log.at(record, got_b)) == {"a": (2, 0), "b": (6, 0)}
    # No update received at all: where the subscriptions started.
    assert pos_of(log.at(record, None)) == {"a": (1, 0), "b": (5, 0)}


def test_checkpoints_shorten_the_replay_and_agree_with_it() -> None:
    log = Log()
    rec = log.recorder
    log.connect("s1")
    sub(log, "s1", "a", (1, 0))
    log.fanout("a", (2, 0))
    log.flush()
    [first] = rec.checkpoints()
    assert first.record["cp"]["t"] == {"a": ["2-0", True, None]}
    offset = log.fanout("a", (3, 0))
    # From the checkpoint and from the base: the same positions.
    assert pos_of(log.at(first.record, offset)) == {"a": (3, 0)}
    assert pos_of(log.at({**first.record, "cp": None, "prev": None}, offset)) == {"a": (3, 0)}
    # Unchanged since: the next checkpoint keeps when its state began (`s`).
    log.flush()
    [moved] = rec.checkpoints()
    assert moved.record["prev"]["t"] == first.record["cp"]["t"] == {"a": ["2-0", True, None]}
    assert rec.checkpoints() == []  # nothing new to write...
    log.recorder.shared("b", (9, 0))  # (a topic it does not follow)
    [again] = rec.checkpoints(all_due=True)  # ...unless it is time to refresh
    assert again.record["cp"]["s"] <= again.record["cp"]["n"]


def test_a_frame_made_mid_hand_out_does_not_count_the_frame_not_yet_received() -> None:
    """A big room is handed a shared frame in slices; a connection in a later slice
    may be sent a frame of its own in between. Its offset comes after the shared
    frame's entry, which it did not get yet: a RESET entry says where it truly is."""
    log = Log()
    rec = log.recorder
    records = {}
    for sid in ("early", "late"):
        records[sid] = log.connect(sid)
        sub(log, sid, "room", (1, 0))
        sub(log, sid, "other", (1, 0))
    shared = rec.shared("room", (2, 0))  # slice 1: "early" gets it
    log.positions[("early", "room")] = (2, 0)
    own = rec.frame(["late"], "other", (4, 0))  # between the slices
    assert own is not None
    log.positions[("late", "other")] = (4, 0)
    again = rec.shared("room", (2, 0), since=Offset.parse(shared).n)  # type: ignore[union-attr]
    assert again != shared  # renumbered: "late"'s offsets must increase
    rec.handed_out()
    late, early = records["late"], records["early"]
    assert pos_of(log.at(late, own)) == {"room": (1, 0), "other": (4, 0)}
    assert pos_of(log.at(late, again)) == {"room": (2, 0), "other": (4, 0)}
    assert pos_of(log.at(early, shared)) == {"room": (2, 0), "other": (1, 0)}


def test_frames_numbered_together_count_only_once_handed_out() -> None:
    """The hub numbers every queued batch at once (their entries in one write), then
    hands them out in order; a frame of one connection's own made before one of them
    reached it does not count that one as received, whichever of them it is."""
    log = Log()
    rec = log.recorder
    record = log.connect("x")
    for topic in ("a", "b", "c"):
        sub(log, "x", topic, (1, 0))
    rec.shared("a", (2, 0))  # numbered together, neither handed out yet
    rec.shared("b", (3, 0))
    own = rec.frame(["x"], "c", (5, 0))
    assert own is not None
    log.positions[("x", "c")] = (5, 0)
    got_a = rec.shared("a", (2, 0))  # logged since: numbered again, then handed out
    log.positions[("x", "a")] = (2, 0)
    got_b = rec.shared("b", (3, 0))
    rec.handed_out()
    assert pos_of(log.at(record, own)) == {"a": (1, 0), "b": (1, 0), "c": (5, 0)}
    assert pos_of(log.at(record, got_a)) == {"a": (2, 0), "b": (1, 0), "c": (5, 0)}
    assert pos_of(log.at(record, got_b)) == {"a": (2, 0), "b": (3, 0), "c": (5, 0)}


def test_records_due_without_a_change_are_the_new_and_the_closed_ones() -> None:
    """Every write of the log asks for these: it must not cost a look at every
    connection."""
    log = Log()
    rec = log.recorder
    for sid in ("s1", "s2", "s3"):
        log.connect(sid)
        sub(log, sid, "a", (1, 0))
    assert [c.pid for c in rec.checkpoints(changed=False)] == ["s1pid", "s2pid", "s3pid"]
    log.fanout("a", (2, 0))
    assert rec.checkpoints(changed=False) == []
    rec.disconnected("s3")
    rec.disconnected("s1")
    last = rec.checkpoints(changed=False)
    assert [(c.pid, c.final) for c in last] == [("s1pid", True), ("s3pid", True)]
    assert [c.pid for c in rec.checkpoints()] == ["s2pid"]  # changed: the shared frame


def rounding(rec: Recorder) -> bool:
    """`rec.rounding`, read afresh (a call: mypy keeps no narrowing across calls)."""
    return rec.rounding


def test_a_round_of_checkpoints_in_slices_writes_each_connection_once() -> None:
    """With a limit, a round over every connection is made a slice per call (the event
    loop runs hand-outs in between): every connection whose state changed gets its
    record in the round, once; one that connects or closes meanwhile is not held up,
    and agrees with the log at the entry its slice was made at."""
    log = Log()
    rec = log.recorder
    sids = [f"s{i}" for i in range(7)]
    for sid in sids:
        log.connect(sid)
        sub(log, sid, "a", (1, 0))
    rec.checkpoints(changed=False)  # the first records
    log.fanout("a", (2, 0))  # every one of them changed
    written: list[str] = []
    first = rec.checkpoints(changed=True, limit=3)
    assert [c.pid for c in first] == ["s0pid", "s1pid", "s2pid"]
    assert rounding(rec)
    written += [c.pid for c in first]
    late = log.fanout("a", (3, 0))  # between two slices
    log.connect("new")
    rec.disconnected("s5")
    rec.disconnected("s1")  # (its record of this round written already)
    second = rec.checkpoints(changed=False, limit=3)
    # the slice's three (s5's last record), and the ones due whatever the round: s1's
    # last record and the new one's first
    assert [c.pid for c in second] == ["s1pid", "s3pid", "s4pid", "s5pid", "newpid"]
    assert [c.final for c in second] == [True, False, False, True, False]
    assert rounding(rec)
    third = rec.checkpoints(changed=False, limit=3)
    assert [c.pid for c in third] == ["s6pid"]
    assert not rounding(rec)
    written += [c.pid for c in second[1:] + third]
    assert sorted(written) == sorted([f"{sid}pid" for sid in sids] + ["newpid"])
    # A slice's records are made at its own entry: the later ones include the frame
    # handed out between the slices, and each agrees with the log.
    s0 = first[0].record
    s6 = third[0].record
    assert s0["cp"]["t"] == {"a": ["2-0", True, None]}
    assert s6["cp"]["t"] == {"a": ["3-0", True, None]}
    assert pos_of(log.at(s0, late)) == pos_of(log.at(s6, late)) == {"a": (3, 0)}
    assert rec.checkpoints(changed=False, limit=3) == []  # the round is over


def test_a_round_due_again_goes_on_and_a_whole_one_starts_afresh() -> None:
    """Due again before a round ended (thousands of connections, a slow Redis): the
    round goes on, so the connections at its end are not left out round after round;
    without a limit (the last flush) every connection is looked at."""
    log = Log()
    rec = log.recorder
    for sid in ("s0", "s1", "s2", "s3"):
        log.connect(sid)
        sub(log, sid, "a", (1, 0))
    rec.checkpoints(changed=False)
    log.fanout("a", (2, 0))
    assert [c.pid for c in rec.checkpoints(changed=True, limit=2)] == ["s0pid", "s1pid"]
    # due again: goes on with s2 and s3 (not s0 and s1 again, refresh or not)
    assert [c.pid for c in rec.checkpoints(changed=True, all_due=True, limit=2)] == [
        "s2pid",
        "s3pid",
    ]
    assert not rounding(rec)
    # a refresh round writes the unchanged ones too, slice by slice
    assert [c.pid for c in rec.checkpoints(changed=True, all_due=True, limit=3)] == [
        "s0pid",
        "s1pid",
        "s2pid",
    ]
    assert [c.pid for c in rec.checkpoints(changed=False, limit=3)] == ["s3pid"]
    log.fanout("a", (3, 0))
    assert [c.pid for c in rec.checkpoints(changed=True, limit=1)] == ["s0pid"]
    everyone = rec.checkpoints(changed=True)  # no limit: all of them, s0 unchanged since
    assert [c.pid for c in everyone] == ["s1pid", "s2pid", "s3pid"]
    assert not rounding(rec)


def test_off_and_max_rate_subscriptions_take_no_shared_frames() -> None:
    log = Log()
    rec = log.recorder
    base = log.connect("s1")
    sub(log, "s1", "a", (1, 0))
    rec.changed("s1", OFF, "a", (1, 0), None)  # a slow client: suspended
    log.fanout("a", (2, 0))  # not for it
    caught_up = rec.frame(["s1"], "a", (2, 0))
    rec.changed("s1", SUBSCRIBE, "slow", (1, 0), 2.0)  # max_rate: paced frames only
    log.fanout("slow", (3, 0))
    paced = rec.frame(["s1"], "slow", (2, 0))
    # (A subscription asked for after the offset counts, from where it started.)
    assert pos_of(log.at(base, caught_up)) == {"a": (2, 0), "slow": (1, 0)}
    state = log.at(base, paced)
    assert pos_of(state) == {"a": (2, 0), "slow": (2, 0)}
    assert state["slow"].max_rate == 2.0
    assert positions(state) == {"a": ((2, 0), None, False), "slow": ((2, 0), 2.0, False)}
    assert load_state(dump_state(state)) == {
        "a": TopicState((2, 0), False, None),
        "slow": TopicState((2, 0), False, 2.0),
    }


def test_a_presence_watch_is_part_of_the_session_until_a_subscribe_without_it() -> None:
    log = Log()
    rec = log.recorder
    base = log.connect("s1")
    sub(log, "s1", "a", (1, 0))
    rec.watched("s1", "a")  # subscribe {presence: true}
    sub(log, "s1", "b", (1, 0))
    got = log.fanout("a", (2, 0))
    state = log.at(base, got)
    assert positions(state) == {"a": ((2, 0), None, True), "b": ((1, 0), None, False)}
    log.flush()
    [checkpoint] = rec.checkpoints()
    assert checkpoint.record["cp"]["w"] == ["a"]  # beside "t", which older instances read
    assert log.at(checkpoint.record, got)["a"].watch is True
    assert load_state(checkpoint.record["cp"]["t"])["a"].watch is False  # a record without "w"
    rec.changed("s1", SUBSCRIBE, "a", (2, 0), None)  # subscribe again, without presence
    own = rec.frame(["s1"], "a", (3, 0))
    assert log.at(base, own)["a"].watch is False
    log.flush()
    [again] = rec.checkpoints()
    assert again.record["cp"]["w"] == []


def test_a_missing_entry_or_a_foreign_offset_is_not_recovered() -> None:
    log = Log()
    rec = log.recorder
    base = log.connect("s1")
    sub(log, "s1", "a", (1, 0))
    log.flush()
    lost = rec.shared("a", (2, 0))  # made, never written (the instance was killed)
    rec.take_pending()
    with pytest.raises(LogGap):
        log.at(base, lost)
    assert resolve(base, Offset("otherepoch", 5)) is None
    with pytest.raises(LogGap):  # entries before the checkpoint's next one are gone
        replay({}, "1", 0, [(3, ["F - a 1-0 -"])], 3)


def test_what_a_client_asked_for_after_its_last_update_counts() -> None:
    """A subscribe (or unsubscribe) after the last `update` the client got: the
    subscription comes back from where it started, and the unsubscribed one does not."""
    log = Log()
    rec = log.recorder
    base = log.connect("s1")
    start = rec.offset()
    sub(log, "s1", "a", (1, 0))
    sub(log, "s1", "gone", (1, 0))
    last = log.fanout("a", (2, 0))
    sub(log, "s1", "b", (7, 0))  # acked, no update yet
    rec.changed("s1", "U", "gone", None, None)
    log.fanout("a", (3, 0))  # lost in the drop
    assert pos_of(log.at(base, last)) == {"a": (2, 0), "b": (7, 0)}
    # The resume token of the CONNECT answer (before any update): all it asked for.
    assert pos_of(log.at(base, str(start))) == {"a": (1, 0), "b": (7, 0)}


def test_replay_skips_other_topics_and_connections_and_applies_its_own() -> None:
    """A record may be a refresh interval behind, so a recovery replays long stretches of
    the log, mostly other topics' shared frames, which it skips unparsed: what concerns
    the connection (tag "1") still counts, and nothing else does."""
    state = {"a": TopicState((1, 0), True, None)}
    lines = [
        "F - b 9-0 -",  # another topic's shared frame
        "S 11 c 1-0 -",  # connection 0x11 subscribes: not "1"
        "S 1 c 3-0 -",  # it subscribes, from 3-0 (not live: shared frames skip it)
        "F - c 5-0 -",
        "F 11 c 8-0 -",  # 0x11's own frame
        "F 2,1 c 4-0 -",  # a page of history to it and to 0x2
        "F - a 6-0 -",  # its live topic's shared frame
        "F - a 7-0 -",  # after its offset: not received
    ]
    out = replay(state, "1", 0, [(1, lines)], 7)
    assert pos_of(out) == {"a": (6, 0), "c": (4, 0)}
    assert state["a"].pos == (1, 0)  # the checkpoint's state is left as it was
