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

from processors.pipelines.retention import Retention, trim_below
from processors.pipelines.transform import TopicEvent
from processors.worker.fencing import HistoryWrite
from realtime.core import jsoncodec
from realtime.core.keys import HISTORY_DATA_FIELD, HISTORY_TS_FIELD, Keys

NO_RETENTION = Retention()


def history_write(
    keys: Keys, event: TopicEvent, retention: Retention = NO_RETENTION
) -> HistoryWrite:
    keep_ms, maxlen = retention.of(event.topic)
    return HistoryWrite(
        key=keys.topic(event.topic),
        id=event.id,
        fields=[HISTORY_TS_FIELD, str(event.ts), HISTORY_DATA_FIELD, jsoncodec.dumps(event.data)],
        maxlen=maxlen,
        minid=trim_below(event.id, keep_ms),
        topic=event.topic,
        ts=event.ts,
    )
