"""Engine.IO transports: long-polling and websocket clients, connect and disconnect."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.clients import Collector

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_client_connects_subscribes_and_disconnects_promptly(
    base_url: str, transport: str
) -> None:
    client = await Collector(transport).connect(base_url, [transport])
    assert client.transport == transport
    await client.subscribe("metrics.cpu")
    # python-engineio leaves a disconnecting long-poll GET unanswered until the ping
    # timeout (about 45 s); the server answers it at once.
    await asyncio.wait_for(client.close(), 5)


async def test_polling_client_upgrades_to_websocket_by_default(base_url: str) -> None:
    client = await Collector().connect(base_url, ["polling", "websocket"])
    await client.subscribe("metrics.cpu")
    await asyncio.wait_for(client.close(), 5)
