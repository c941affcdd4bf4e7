"""The load generator's stamped clients: Socket.IO over a plain socket read with the
kernel's receive timestamps, so latency is measured to the packet's arrival, not to
whenever the generator got round to it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from realtime.core.settings import Settings
from realtime.loadtest import stamped, wsclient
from realtime.web.app import DELIVERY
from tests.helpers.inprocess import serving

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not stamped.supported(), reason="no SO_TIMESTAMPNS here"),
]


async def test_a_stamped_client_gets_the_arrival_time_not_the_time_it_was_handled(
    settings: Settings,
) -> None:
    got: list[tuple[float, float, list[str]]] = []
    arrived_event = asyncio.Event()

    def on_update(client: Any, events: list[Any], at_ms: float) -> None:
        got.append((at_ms, time.time() * 1000, [e["id"] for e in events]))
        arrived_event.set()

    async with serving(settings.with_overrides(batch_tick_ms=0)) as (url, app):
        client = await wsclient.connect(url, deflate=False, on_update=on_update, stamped=True)
        ack = await client.call("subscribe", {"topic": "st.t"})
        assert ack["ok"], ack  # acks and events both ways
        assert ack["since"] == "0-0", ack
        delivery = app[DELIVERY]
        # A first event, waited for: the subscription's catch-up from history is over,
        # so the measured one below is written straight to the socket by the sender.
        await delivery.live("st.t", [{"topic": "st.t", "id": "4-0", "ts": 4, "data": {}}])
        await asyncio.wait_for(arrived_event.wait(), 30)
        got.clear()
        arrived_event.clear()
        event = {"topic": "st.t", "id": "5-0", "ts": 5, "data": {}}
        await delivery.live("st.t", [event])
        assert delivery._sender is not None
        await delivery._sender  # written to the socket; read at the loop's next poll
        # It arrives while this coroutine keeps the loop busy: the stamp is the arrival.
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            pass
        # Generous: a busy machine may take a while to schedule the read (no timing here).
        await asyncio.wait_for(arrived_event.wait(), 30)
        ((arrived, handled, ids),) = got
        assert ids == ["5-0"]
        assert handled - arrived >= 150  # it waited in the socket while the loop was busy
        assert abs(arrived - time.time() * 1000) < 5_000  # the wall clock, like the publisher's
        client.close()
        reason = await asyncio.wait_for(client.closed, 5)
        assert reason is None
