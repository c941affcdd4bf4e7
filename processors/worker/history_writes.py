"""Topic history, the writing side: a topic event becomes an entry of `rt:topic:{topic}`
whose stream id is the event id.

Idempotent: the commit (`processors/worker/fencing.py`) writes each entry with its explicit id;
Redis refuses an id at or below the stream's last one, and the commit skips that refusal
as "already written", so a redelivered entry cannot create a second history entry.
Bounded by time (the topic's retention: `XTRIM MINID ~` after the batch's writes, once
the trim point has moved on by `trim_step`) and by an approximate MAXLEN as a safety
cap. The reading side is `realtime/delivery/history.py`.
Each write names its topic, so the commit also records the topic in the topic directory
(`realtime/core/directory.py`) once per batch, counting only the entries it wrote.
"""

from __future__ import annotations

from typing import Any

import orjson

from processors.pipelines.retention import Retention, trim_below
from processors.pipelines.transform import TopicEvent
from processors.worker.fencing import HistoryWrite
from realtime.core.keys import HISTORY_DATA_FIELD, HISTORY_TS_FIELD, Keys

NO_RETENTION = Retention()
_MEMO_LIMIT = 100_000  # topics come from producers: stay bounded
TRIM_STEP_MS = 1000


def trim_step(keep_ms: int) -> int:
    """How far a topic's trim point moves before it is trimmed again: a trim per topic
    per commit was a tenth of the commit's Redis instructions (`python -m
    bench.commit_cost`), for a time limit kept to within this (a 64th of it at most)."""
    return min(TRIM_STEP_MS, keep_ms // 64)


class HistoryTargets:
    """The history writes of one worker's topics; what does not depend on the event (the
    key, the retention) is looked up once per topic: this is the per-event path."""

    def __init__(self, keys: Keys, retention: Retention = NO_RETENTION) -> None:
        self.keys = keys
        self.retention = retention
        # topic -> [key, keep_ms, maxlen, trim step, the trim point from which the next
        # write trims]: forgetting it only trims sooner (a trim point is the same
        # whoever writes it: `trim_below`)
        self._memo: dict[str, list[Any]] = {}
        self._trim_ms, self._trim_keep, self._trim_minid, self._trim_point = "", 0, "", -1

    def write(
        self, topic: str, event_id: str, ts: int, data: dict[str, Any], raw: bytes | str = b""
    ) -> HistoryWrite:
        """`raw`: `data` as JSON already (IngestEvent.raw), written as it is."""
        target = self._memo.get(topic)
        if target is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            keep_ms, maxlen = self.retention.of(topic)
            target = [self.keys.topic(topic), keep_ms, maxlen, trim_step(keep_ms), 0]
            self._memo[topic] = target
        key, keep_ms, maxlen, step, due = target
        minid = ""
        if keep_ms > 0:
            ms = event_id.partition("-")[0]
            if ms != self._trim_ms or keep_ms != self._trim_keep:  # a batch's ids share a few
                self._trim_ms, self._trim_keep = ms, keep_ms
                self._trim_minid = trim_below(event_id, keep_ms)
                self._trim_point = int(self._trim_minid) if self._trim_minid else -1
            if self._trim_point >= due:
                minid = self._trim_minid
                target[4] = self._trim_point + step
        ts_text = str(ts)
        if not raw:
            json = orjson.dumps(data).decode()
        else:
            json = raw.decode() if isinstance(raw, bytes) else raw
        return HistoryWrite(
            key,
            event_id,
            [HISTORY_TS_FIELD, ts_text, HISTORY_DATA_FIELD, json],
            maxlen,
            minid,
            topic,
            ts,
            ts_text,
        )


def history_write(
    keys: Keys, event: TopicEvent, retention: Retention = NO_RETENTION
) -> HistoryWrite:
    return HistoryTargets(keys, retention).write(
        event.topic, event.id, event.ts, event.data, event.raw
    )
