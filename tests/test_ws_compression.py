"""permessage-deflate is a setting: off by default (every websocket gets the same
pre-built frames), on with REALTIME_WS_COMPRESSION=1 (frames compressed per connection).
Either way a client gets the same `update` packets, in order."""

from __future__ import annotations

import json

import aiohttp
import pytest

from realtime.core.settings import Settings
from realtime.web.app import DELIVERY
from tests.helpers.inprocess import serving

pytestmark = pytest.mark.integration


def events(*ns: int) -> list[dict[str, object]]:
    return [{"topic": "z.t", "id": f"{n}-0", "ts": n, "data": {"n": n}} for n in ns]


@pytest.mark.parametrize("compression", [False, True])
async def test_deflate_is_negotiated_only_when_configured_and_updates_arrive_in_order(
    settings: Settings, compression: bool
) -> None:
    async with (
        serving(settings.with_overrides(ws_compression=compression)) as (url, app),
        aiohttp.ClientSession() as http,
        # Browsers offer permessage-deflate; so does aiohttp's client by default.
        http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket", compress=15) as ws,
    ):
        assert ws.compress == (15 if compression else 0)
        assert (await ws.receive_str()).startswith("0{")
        await ws.send_str("40")
        assert (await ws.receive_str()).startswith("40{")
        await ws.send_str('421["subscribe",{"topic":"z.t"}]')
        ack = await ws.receive_str()
        assert ack.startswith("431["), ack

        delivery = app[DELIVERY]
        for n in range(1, 301, 3):  # each batch past the tick: several packets
            await delivery.live("z.t", events(n, n + 1, n + 2))
        got: list[str] = []
        while len(got) < 300:
            frame = await ws.receive_str(timeout=10)
            if frame.startswith('42["update",'):
                got += [e["id"] for e in json.loads(frame[2:])[1]]
        assert got == [f"{n}-0" for n in range(1, 301)]
