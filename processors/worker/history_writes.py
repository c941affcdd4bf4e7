"""Topic history, the writing side: a topic event becomes an entry of `rt:topic:{topic}`
whose stream id is the event id.

Idempotent: the commit (`processors/worker/fencing.py`) writes each entry with its explicit id;
Redis refuses an id at or below the stream's last one, and the commit skips that refusal
as "already written", so a redelivered entry cannot create a second history entry.
Bounded by time (the topic's retention: `XTRIM MINID ~` after the batch's writes) and by
an approximate MAXLEN as a safety cap. The reading side is `realtime/delivery/history.py`.
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


class HistoryTargets:
    """The history writes of one worker's topics; what does not depend on the event (the
    key, the retention) is looked up once per topic: this is the per-event path."""

    def __init__(self, keys: Keys, retention: Retention = NO_RETENTION) -> None:
        self.keys = keys
        self.retention = retention
        self._memo: dict[str, tuple[str, int, int]] = {}  # topic -> (key, keep_ms, maxlen)
        self._trim_ms, self._trim_keep, self._trim_minid = "", 0, ""

    def write(
        self, topic: str, event_id: str, ts: int, data: dict[str, Any], raw: bytes | str = b""
    ) -> HistoryWrite:
        """`raw`: `data` as JSON already (IngestEvent.raw), written as it is."""
        target = self._memo.get(topic)
        if target is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            target = self._memo[topic] = (self.keys.topic(topic), *self.retention.of(topic))
        key, keep_ms, maxlen = target
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
            self._trim(event_id, keep_ms) if keep_ms > 0 else "",
            topic,
            ts,
            ts_text,
        )

    def _trim(self, event_id: str, keep_ms: int) -> str:
        """`trim_below`, remembered for the last id's time: a batch's ids share a few."""
        ms = event_id.partition("-")[0]
        if ms == self._trim_ms and keep_ms == self._trim_keep:
            return self._trim_minid
        minid = trim_below(event_id, keep_ms)
        self._trim_ms, self._trim_keep, self._trim_minid = ms, keep_ms, minid
        return minid


def history_write(
    keys: Keys, event: TopicEvent, retention: Retention = NO_RETENTION
) -> HistoryWrite:
    return HistoryTargets(keys, retention).write(
        event.topic, event.id, event.ts, event.data, event.raw
    )
