"""Which topic channels a web instance listens on: the bookkeeping of interest-based
fan-out (`realtime/fanout/channels.py` does the I/O).

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Interest:
    wanted: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)  # subscribed, as far as commands sent go
    pending: dict[str, int] = field(default_factory=dict)  # SUBSCRIBEs not yet answered
    confirmed: set[str] = field(default_factory=set)

    def want(self, topic: str, wanted: bool) -> bool:
        """Record whether the topic is wanted; True if that differs from what has been
        asked of Redis (the listener has something to send)."""
        if wanted:
            self.wanted.add(topic)
        else:
            self.wanted.discard(topic)
        return wanted != (topic in self.sent)

    def plan(self) -> tuple[list[str], list[str]]:
        """The topics to SUBSCRIBE and to UNSUBSCRIBE now, recorded as sent."""
        subscribe = sorted(self.wanted - self.sent)
        unsubscribe = sorted(self.sent - self.wanted)
        for topic in subscribe:
            self.pending[topic] = self.pending.get(topic, 0) + 1
        self.confirmed.difference_update(unsubscribe)
        self.sent = set(self.wanted)
        return subscribe, unsubscribe

    def answered(self, topic: str) -> bool:
        """Redis answered a SUBSCRIBE of the topic's channel; True if the topic is now
        confirmed."""
        count = self.pending.get(topic, 0)
        if count > 1:
            self.pending[topic] = count - 1
            return False
        if count == 0:
            return False  # not one of ours
        del self.pending[topic]
        if topic not in self.sent:
            return False
        self.confirmed.add(topic)
        return True

    def is_confirmed(self, topic: str) -> bool:
        return topic in self.confirmed

    def reset(self) -> None:
        """The connection is gone: nothing is subscribed; what is wanted stays wanted."""
        self.sent.clear()
        self.pending.clear()
        self.confirmed.clear()
