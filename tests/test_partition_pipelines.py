"""PartitionPipelines.build, the exactly-once core of the worker, without Redis: what one
batch's commit writes and acknowledges, as a table, then windows closing, the replay
after a crash and outputs that were already committed."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import pytest

from processors.pipelines.config import build as build_config
from processors.pipelines.plan import Pipelines
from processors.pipelines.transform import decode_entry
from processors.worker.fencing import Entry
from processors.worker.partition_pipelines import Batch, Outcome, PartitionPipelines
from realtime.core.keys import Keys
from realtime.core.wire import UpdateEncoder

pytestmark = pytest.mark.unit

KEYS = Keys("rt:")
STREAM = KEYS.ingest(0)
ENCODER = UpdateEncoder(KEYS, host_id="test")
PIPELINES = Pipelines(
    build_config(
        {
            "pipelines": [
                {"name": "metrics", "match": "metrics.*", "windows": {"sizes": ["1s"]}},
                {"name": "copies", "match": "orders.*", "routes": [{"to": "audit.orders"}]},
            ]
        },
        "test",
    )
)


def outcome(ms: int, topic: str, value: float = 1.0, *, dead: str | None = None) -> Outcome:
    fields: dict[bytes | str, bytes | str] = {
        b"topic": topic.encode(),
        b"ts": str(ms).encode(),
        b"data": orjson.dumps({"value": value}),
    }
    entry = Entry(id=f"{ms}-0", fields=fields)
    if dead is not None:
        return Outcome(entry=entry, dead=dead)
    event = decode_entry(entry.id, fields)
    return Outcome(entry=entry, event=event, plan=PIPELINES.plan(event, 0))


def stage(checkpoint: dict[bytes | str, bytes | str] | None = None) -> PartitionPipelines:
    """A partition's stage as the runner makes it: restored first (at time 0)."""
    made = PartitionPipelines(PIPELINES, KEYS, partitions=1, checkpoint_s=1.0)
    made.restore(checkpoint or {}, now=0.0)
    return made


def checkpoint_of(batches: list[Batch]) -> dict[bytes | str, bytes | str]:
    """The `rt:windows:{p}` hash after these committed batches (HSET, HDEL)."""
    saved: dict[bytes | str, bytes | str] = {}
    for batch in batches:
        pairs = batch.plan.checkpoint
        for name, value in zip(pairs[::2], pairs[1::2], strict=True):
            saved[name.encode()] = value.encode()
        for name in batch.plan.removed:
            saved.pop(name.encode(), None)
    return saved


def history(batch: Batch) -> list[tuple[str, str]]:
    return [(w.key, w.id) for w in batch.plan.history]


@dataclass
class Row:
    name: str
    outcomes: list[Outcome]
    now: float
    history: list[tuple[str, str]]
    acks: list[str]
    pending: list[str] = field(default_factory=list)
    checkpointed: bool = False
    routed: int = 0
    dead_letters: int = 0
    checkpoint: bool = False


TABLE = [
    Row(
        "pass-through only: written, published and acked at once",
        [outcome(1000, "orders.eu")],
        now=0.1,
        history=[(KEYS.topic("orders.eu"), "1000-0")],
        acks=["1000-0"],
        routed=1,
    ),
    Row(
        "a window value, checkpoint not due: the entry stays pending",
        [outcome(1000, "metrics.cpu")],
        now=0.5,
        history=[(KEYS.topic("metrics.cpu"), "1000-0")],
        acks=[],
        pending=["1000-0"],
    ),
    Row(
        "a window value, checkpoint due: saved, and acked with it",
        [outcome(1000, "metrics.cpu")],
        now=1.5,
        history=[(KEYS.topic("metrics.cpu"), "1000-0")],
        acks=["1000-0"],
        checkpointed=True,
    ),
    Row(
        "a window value, checkpoint forced (the lease is given up)",
        [outcome(1000, "metrics.cpu")],
        now=0.2,
        history=[(KEYS.topic("metrics.cpu"), "1000-0")],
        acks=["1000-0"],
        checkpointed=True,
        checkpoint=True,
    ),
    Row(
        "a poison entry: dead-lettered and acked, the others go on",
        [outcome(1000, "orders.eu", dead="bad"), outcome(1001, "orders.eu")],
        now=0.1,
        history=[(KEYS.topic("orders.eu"), "1001-0")],
        acks=["1000-0", "1001-0"],
        routed=1,
        dead_letters=1,
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_one_batch(row: Row) -> None:
    batch = stage().build(STREAM, row.outcomes, ENCODER, now=row.now, checkpoint=row.checkpoint)
    assert history(batch) == row.history
    assert batch.plan.acks == row.acks
    assert batch.pending == row.pending
    assert batch.checkpointed is row.checkpointed
    assert len(batch.plan.routed) == row.routed
    assert len(batch.plan.dead_letters) == row.dead_letters
    # one `update` publish per topic written
    assert len(batch.plan.publishes) == len({key for key, _ in row.history})


def test_windows_close_on_the_clock_with_ids_at_their_end() -> None:
    pipes = stage()
    first = pipes.build(
        STREAM, [outcome(1100, "metrics.cpu", 2), outcome(1900, "metrics.cpu", 4)], ENCODER, now=0.1
    )
    pipes.committed(first)
    assert pipes.open_windows
    closed = pipes.build(STREAM, [], ENCODER, now=0.4, clock_ms=5000)
    (write,) = closed.plan.history
    assert (write.key, write.id) == (KEYS.topic("metrics.cpu:1s"), "2000-0")
    assert closed.outputs == {0}
    assert closed.fed
    # the entries that fed the window were pending; a later checkpoint acks them
    pipes.committed(closed)
    saved = pipes.build(STREAM, [], ENCODER, now=2.0)
    assert saved.checkpointed
    assert saved.plan.acks == ["1100-0", "1900-0"]


def test_a_replay_after_a_crash_makes_the_same_outputs_and_feeds_nothing_twice() -> None:
    events = [outcome(1100, "metrics.cpu", 2), outcome(1900, "metrics.cpu", 4)]
    later = [outcome(2100, "metrics.cpu", 8)]
    # The first owner: checkpoints after the first two entries, then crashes with the
    # third fed but not checkpointed (so still pending in the consumer group).
    owner = stage()
    saved = owner.build(STREAM, events, ENCODER, now=0.1, checkpoint=True)
    owner.committed(saved)
    unsaved = owner.build(STREAM, later, ENCODER, now=0.2)
    owner.committed(unsaved)
    assert unsaved.pending == ["2100-0"]
    before = owner.build(STREAM, [], ENCODER, now=0.5, clock_ms=9000)

    # The next owner restores the checkpoint and replays every pending entry, including
    # ones the checkpoint already holds (they are acked, not fed again).
    heir = stage(checkpoint_of([saved]))
    replay = heir.build(STREAM, [*events, *later], ENCODER, now=0.1)
    assert replay.plan.acks == ["1100-0", "1900-0"]
    assert replay.pending == ["2100-0"]
    heir.committed(replay)
    after = heir.build(STREAM, [], ENCODER, now=0.5, clock_ms=9000)
    assert (
        history(after)
        == history(before)
        == [
            (KEYS.topic("metrics.cpu:1s"), "2000-0"),
            (KEYS.topic("metrics.cpu:1s"), "3000-0"),
        ]
    )
    assert [w.fields for w in after.plan.history] == [w.fields for w in before.plan.history]


def test_outputs_already_committed_are_not_written_again() -> None:
    """Routed copies of entries at or below the checkpoint's `routed` are in their
    streams already; a window output that cannot be written is dead-lettered when the
    replay makes it again, in a commit that checkpoints its window."""
    owner = stage()
    first = owner.build(STREAM, [outcome(1000, "orders.eu")], ENCODER, now=0.1)
    owner.committed(first)
    assert len(first.plan.routed) == 1
    heir = stage(checkpoint_of([first]))
    replay = heir.build(STREAM, [outcome(1000, "orders.eu")], ENCODER, now=0.1)
    assert replay.plan.routed == []
    assert history(replay) == history(first)  # history refuses the same id: a no-op

    pipes = stage()
    pipes.committed(pipes.build(STREAM, [outcome(1100, "metrics.cpu")], ENCODER, now=0.1))
    failed = pipes.build(STREAM, [], ENCODER, now=0.2, clock_ms=5000)
    reason = pipes.dead_output(failed, 0, "WRONGTYPE")
    assert reason is not None
    assert "WRONGTYPE" in reason
    pipes.failed(failed)
    assert pipes.stale
    pipes.restore({}, now=0.3)
    again = pipes.build(STREAM, [outcome(1100, "metrics.cpu")], ENCODER, now=0.4, clock_ms=5000)
    assert (KEYS.topic("metrics.cpu:1s"), "2000-0") not in history(again)
    assert len(again.plan.dead_letters) == 1
    assert again.checkpointed
    assert again.dead_outputs == [(KEYS.topic("metrics.cpu:1s"), "2000-0")]
