"""Topic history, the writing side: a topic event becomes an entry of `rt:topic:{topic}`
whose stream id is the event id.

Idempotent: the commit (`processors/worker/fencing.py`) writes each entry with its explicit id;
Redis refuses an id at or below the stream's last one, and the commit skips that refusal
as "already written", so a redelivered entry cannot create a second history entry.
Bounded with an approximate MAXLEN. The reading side is `realtime/delivery/history.py`.
"""

from __future__ import annotations

from processors.pipelines.transform import TopicEvent
from processors.worker.fencing import HistoryWrite
from realtime.core import jsoncodec
from realtime.core.keys import Keys
from realtime.delivery.history import DATA_FIELD, TS_FIELD


def history_write(keys: Keys, event: TopicEvent) -> HistoryWrite:
    return HistoryWrite(
        key=keys.topic(event.topic),
        id=event.id,
        fields=[TS_FIELD, str(event.ts), DATA_FIELD, jsoncodec.dumps(event.data)],
    )
