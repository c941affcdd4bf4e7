"""The topic directory's counts, held back: a partition's owner records a topic at most
about once a second.

The commit script records each topic it writes in the directory
(`realtime/core/directory.py`): the old record read, parsed and written again in Lua,
a third of the commit's Redis instructions per event when a batch's topics are mostly
different (1,000 topics, batches of 256: `python -m bench.commit_cost`). The partition's
owner is the only writer of its directory, so what it writes of a topic recorded less
than `step_s` ago is left out of the script's record (the write's topic is blank) and
counted here; the sum goes into a later commit's `"t"` (the directory entries of writes
made before or elsewhere): the topic's next commit once `step_s` has passed, any commit
once the oldest count held is `step_s` old, and the partition's last commit.

Only writes that happened count, as before: the script names the writes it skipped as
written before. What it costs: the listing's last event and rate can be about `step_s`
(and, on an idle partition, the worker's wait, REALTIME_BLOCK_MS) behind; counts held by
a worker that dies or loses its lease are never recorded (the rate reads low for that
bucket). History, fan-out and acknowledgement are untouched.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from processors.worker.fencing import HistoryWrite

STEP_S = 1.0
_RECORDED_LIMIT = 100_000  # topics come from producers: stay bounded (forgetting records sooner)


@dataclass(slots=True)
class Held:
    """What one commit leaves to the directory and holds back."""

    recording: set[str] = field(default_factory=set)  # topics the script records
    back: list[int] = field(default_factory=list)  # history writes held back, by index
    flushed: list[str] = field(default_factory=list)  # held topics handed to this commit
    entries: list[list[Any]] = field(default_factory=list)  # their "t": [topic, id, ts, n]


class Unrecorded:
    def __init__(self, step_s: float = STEP_S) -> None:
        self.step_s = step_s
        self._recorded: dict[str, float] = {}  # topic -> when a commit recorded it (monotonic)
        # topic -> [last id, "last ts", events, held since]: oldest first
        self._held: dict[str, list[Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def due(self, now: float) -> bool:
        """The oldest count held is `step_s` old."""
        oldest = next(iter(self._held.values()), None)
        return oldest is not None and oldest[3] + self.step_s <= now

    def hold(self, writes: Sequence[HistoryWrite], docs: list[list[Any]], now: float) -> Held:
        """Blank the directory topic (`docs[i][5]`) of the writes to hold back; the
        held counts due go into this commit."""
        held = Held()
        recording, back, recorded = held.recording, held.back, self._recorded
        step = self.step_s
        recent = now - step
        for index, write in enumerate(writes):  # per event
            topic = write.topic
            if topic in recording or not topic:
                continue
            at = recorded.get(topic)
            if at is not None and at > recent:
                docs[index][5] = ""
                back.append(index)
            else:
                recording.add(topic)
        flushed = held.flushed
        for topic, (_, _, _, held_since) in self._held.items():  # oldest first
            if topic in recording:
                continue  # below
            if held_since + step > now:
                break
            flushed.append(topic)
        flushed += [topic for topic in recording if topic in self._held]
        held.entries = self._entries(flushed)
        return held

    def hold_all(self) -> Held:
        """Every held count into this commit (the partition's last)."""
        flushed = list(self._held)
        return Held(flushed=flushed, entries=self._entries(flushed))

    def _entries(self, topics: list[str]) -> list[list[Any]]:
        """The script's "t" entries of these held topics: [topic, id, ts, events]."""
        return [[topic, *self._held[topic][:3]] for topic in topics]

    def committed(
        self,
        held: Held,
        writes: Sequence[HistoryWrite],
        refused: Collection[int],
        now: float,
        *,
        written: int | None = None,
    ) -> None:
        """The commit ran: count the held-back writes it made (the first `written`, if it
        stopped at a failed write: then nothing was recorded). `refused`: 1-based
        indexes of writes skipped as written before."""
        if written is None:
            recorded = self._recorded
            if len(recorded) >= _RECORDED_LIMIT:
                recorded.clear()
            for topic in held.flushed:
                del self._held[topic]
            for topic in held.recording:
                recorded[topic] = now
            for topic in held.flushed:
                recorded[topic] = now
        back = held.back
        if written is not None:
            back = [index for index in back if index < written]
        if refused:
            back = [index for index in back if index + 1 not in refused]
        counts = self._held
        for index in back:  # per event
            write = writes[index]
            count = counts.get(write.topic)
            if count is None:
                counts[write.topic] = [write.id, write.ts_text or str(write.ts), 1, now]
            else:
                count[0], count[1], count[2] = (
                    write.id,
                    write.ts_text or str(write.ts),
                    count[2] + 1,
                )
