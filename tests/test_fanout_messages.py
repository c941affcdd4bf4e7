"""Every fan-out message layout a web instance may get during a rolling deploy reaches
its clients once each and in order, alone or merged within one batch tick: this
worker's (room and ids before `data`: the events are passed to the frame undecoded), an
older worker's (`data` first), python-socketio's stock emit (compact, and with the
stdlib's spaces). And the way older web instances read a message (decoded whole) takes
this worker's."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime.core import jsoncodec
from realtime.core.keys import NAMESPACE, UPDATE_EVENT, Keys
from realtime.core.settings import Settings
from realtime.core.wire import UpdateEncoder
from realtime.fanout import manager as manager_module
from realtime.loadtest import wsclient
from tests.helpers.inprocess import serving

pytestmark = pytest.mark.integration

TOPIC = "compat.t"


def event(n: int) -> dict[str, Any]:
    return {"topic": TOPIC, "id": f"{n}-0", "ts": n, "data": {"n": n, "s": 'é"],"data":[['}}


def this_worker(*ns: int) -> bytes:
    [(_, message)] = UpdateEncoder(Keys("x:"), "new").encode_updates(
        [(TOPIC, [event(n) for n in ns])]
    )
    return message


def stock(*ns: int, **extra: Any) -> bytes:
    """python-socketio's emit message (its key order), with `extra` keys after it."""
    message = {
        "method": "emit",
        "event": UPDATE_EVENT,
        "data": [[event(n) for n in ns]],
        "binary": False,
        "namespace": NAMESPACE,
        "room": TOPIC,
        "skip_sid": None,
        "callback": None,
        "host_id": "stock",
    }
    return jsoncodec.dumpb({**message, **extra})


def older_worker(*ns: int) -> bytes:
    return stock(*ns, host_id="old", sent_at=time.time())


def spaced(*ns: int) -> bytes:
    """The stock emit as the stdlib's json writes it."""
    return json.dumps(jsoncodec.loads(stock(*ns))).encode()


def messages(base: int) -> list[bytes]:
    """Events base+1 to base+7 in each layout; base+6 comes twice (a worker's retry)."""
    return [
        this_worker(base + 1),
        older_worker(base + 2),
        stock(base + 3),
        this_worker(base + 4, base + 5),
        older_worker(base + 6),
        this_worker(base + 6),
        spaced(base + 7),
    ]


@pytest.mark.parametrize("split", [True, False], ids=["this web", "as older webs read"])
async def test_every_layout_reaches_clients_once_in_order(
    settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    if not split:
        monkeypatch.setattr(manager_module, "split_update", lambda raw: None)
    got: list[dict[str, Any]] = []
    channel = Keys.of(settings).topic_channel(TOPIC)
    async with serving(settings) as (url, _app):
        client = await wsclient.connect(
            url, deflate=False, on_update=lambda _c, events, _at: got.extend(events)
        )
        ack = await client.call("subscribe", {"topic": TOPIC})
        assert ack["ok"], ack

        async def wait_for(count: int) -> None:
            deadline = time.monotonic() + 10
            while len(got) < count:
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.01)

        for message in messages(0):  # one at a time: each its own batch
            await redis.publish(channel, message)
            await asyncio.sleep(0.05)
        await wait_for(7)
        pipe = redis.pipeline(transaction=False)
        for message in messages(100):  # all at once: merged in one batch tick
            pipe.publish(channel, message)
        await pipe.execute()
        await wait_for(14)
        await asyncio.sleep(0.2)  # (nothing more comes)
        client.abort()
    expected = [*range(1, 8), *range(101, 108)]
    assert got == [event(n) for n in expected]
