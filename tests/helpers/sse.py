"""Reading a Server-Sent Events stream with aiohttp, as a client would: messages parsed
per the HTML spec's rules for the fields this server sends."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Message:
    event: str = "message"
    data: Any = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


async def messages(response: aiohttp.ClientResponse) -> Any:
    """Each message of the stream (comments and id-only messages included), until EOF."""
    current = Message()
    seen = False
    async for raw in response.content:
        line = raw.decode().rstrip("\n").rstrip("\r")
        if not line:
            if seen:
                yield current
            current, seen = Message(), False
            continue
        seen = True
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            current.comments.append(value)
        elif name == "event":
            current.event = value
        elif name == "data":
            current.data = json.loads(value)
        elif name == "id":
            current.id = value
        elif name == "retry":
            current.retry = int(value)
