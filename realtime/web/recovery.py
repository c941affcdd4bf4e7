"""Connection-state recovery at connect time: a CONNECT whose auth carries a session
(socket.io-client's `{pid, offset}`, or an SDK's `{resume: token}`) gets its
subscriptions back, with what it missed replayed through the subscribe path (`since`),
and the same `pid` in the CONNECT answer (socket.io-client: `socket.recovered`).
Anything else, or a session that cannot be recovered exactly, starts a new one.

The log and records: `realtime.delivery.recovery` (pure) and `.sessions` (Redis).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from realtime.core.keys import NAMESPACE, PRESENCE_EVENT
from realtime.core.streamids import StreamId
from realtime.delivery.history import covers
from realtime.delivery.hub import Delivery, HistoryUnavailable
from realtime.delivery.recovery import (
    LogGap,
    Offset,
    Recorder,
    State,
    TopicState,
    load_state,
    new_pid,
    parse_resume,
    positions,
    replay,
    resolve,
    resume_token,
)
from realtime.delivery.sessions import SessionStore
from realtime.transport.frames import Frame
from realtime.web.access import Access

logger = logging.getLogger(__name__)

Plan = dict[str, tuple[StreamId, float | None, bool]]  # topic -> position, max_rate, watch


class Recovery:
    def __init__(
        self, store: SessionStore, recorder: Recorder, delivery: Delivery, access: Access
    ) -> None:
        self.metrics = delivery.metrics
        self.store = store
        self.recorder = recorder
        self.delivery = delivery
        self.access = access
        self._starts: dict[str, Offset] = {}  # sid -> its offset at connect (until CONNECT)
        self._plans: dict[str, Plan] = {}  # sid -> subscriptions to restore after CONNECT
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def connect(self, sid: str, auth: Any) -> None:
        """A connection accepted by `Access`: recover the session it asks for, or
        start a new one."""
        asked = parse_resume(auth)
        plan: tuple[str, Plan, str | None] | None = None
        if asked is not None:
            try:
                plan = await self._plan(sid, *asked)
            except (RedisError, OSError) as exc:
                logger.warning("session not recovered: Redis unavailable (%s)", exc)
            except (KeyError, TypeError, ValueError):  # a record we cannot read: a bug
                logger.exception("session not recovered: unreadable session record")
            if plan is None:
                self.metrics.recoveries.labels("fresh").inc()
        if plan is None:
            self._starts[sid] = self.recorder.connect(sid, new_pid(), {}, None)
            self.store.kick()
            return
        pid, wanted, origin = plan
        state: State = {
            t: TopicState(pos, False, rate, watch=watch) for t, (pos, rate, watch) in wanted.items()
        }
        self._starts[sid] = self.recorder.connect(sid, pid, state, origin)
        record = self.recorder.record(sid)
        assert record is not None
        await self.store.claim(record)
        self._plans[sid] = wanted
        self.metrics.recoveries.labels("recovered").inc()
        logger.info("session recovered with %d subscription(s)", len(wanted))

    async def _plan(
        self, sid: str, pid: str, offset: Offset | None
    ) -> tuple[str, Plan, str | None] | None:
        """What to restore for a client of session `pid` at `offset`; None if that
        cannot be told exactly, or history no longer holds what it missed."""
        record = await self.store.load(pid)
        picked = None if record is None else resolve(record, offset)
        if picked is None:
            return None
        checkpoint, upto = picked
        if checkpoint["e"] == self.recorder.epoch:
            await self.store.flush()  # back on this instance: what it has not written yet
        state = load_state(checkpoint["t"], checkpoint.get("w", ()))
        # The log after the checkpoint, to the connection's last entry (a record
        # written at its disconnect says where that is; else the log's end).
        last = record["cp"] if record is not None else None
        end = last["n"] if last and last.get("f") and last["c"] == checkpoint["c"] else None
        if end is None or end > checkpoint["n"]:
            chunks = await self.store.log(checkpoint["e"], checkpoint["a"], end)
            if chunks is None:
                return None
            try:
                state = replay(state, checkpoint["c"], checkpoint["n"], chunks, upto)
            except LogGap as exc:
                logger.info("session not recovered: %s", exc)
                return None
        wanted = positions(state)
        if wanted is None:
            return None
        held: list[str] = []
        for topic in wanted:
            if self.access.check_subscribe(sid, topic, held) is not None:
                return None  # the new token no longer allows it, or over the limit
            held.append(topic)
        history = self.delivery.history
        for topic, (pos, _, _) in wanted.items():
            if not covers(await history.extent(topic), pos, history.maxlen):
                return None
        return pid, wanted, None if offset is None else str(offset)

    # -- around the CONNECT answer (`SocketServer.connect_hook`) ----------------------------

    def data(self, sid: str) -> dict[str, Any]:
        """What the CONNECT answer carries besides the sid: `pid`, and `resume`, the
        resume token before any `update`."""
        start = self._starts.pop(sid, None)
        pid = self.recorder.pid(sid)
        if start is None or pid is None:
            return {}
        return {"pid": pid, "resume": resume_token(pid, start)}

    def sent(self, sid: str) -> None:
        """The CONNECT answer went out: restore the subscriptions (their replay
        follows it on the connection)."""
        wanted = self._plans.pop(sid, None)
        if wanted:
            task = asyncio.create_task(self._restore(sid, wanted))
            self._tasks[sid] = task
            task.add_done_callback(lambda _t: self._tasks.pop(sid, None))

    async def _restore(self, sid: str, wanted: Plan) -> None:
        grant = self.access.grant(sid)
        for topic, (pos, max_rate, watch) in wanted.items():
            try:
                ack = await self.delivery.subscribe(
                    sid,
                    topic,
                    pos,
                    0,
                    max_rate,
                    presence=watch,
                    sub=grant.sub if grant is not None else None,
                    members=grant is not None and grant.members,
                )
            except HistoryUnavailable:
                ack = {"recovered": False}
            if "presence" in ack:  # the count may have moved while it was away
                event = {"topic": topic, **ack["presence"]}
                self.delivery.send_frame(sid, Frame.event(PRESENCE_EVENT, event))
            if ack.get("recovered") is False:
                # History moved on since the check: the client cannot be told it is
                # whole, so it reconnects and gets a fresh session.
                logger.warning("recovered session lost %s's history; dropping it", topic)
                await self.delivery.sio.drop(sid, NAMESPACE)
                return

    def disconnected(self, sid: str) -> None:
        self._starts.pop(sid, None)
        self._plans.pop(sid, None)
        task = self._tasks.pop(sid, None)
        if task is not None:
            task.cancel()
        self.recorder.disconnected(sid)
        self.store.kick()

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
