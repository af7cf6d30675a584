"""A small real WebSocket client (the `websockets` package) for the server tests and the load bench."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets


class Client:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> Client:
        kwargs.setdefault("max_size", 64 * 1024 * 1024)
        kwargs.setdefault("open_timeout", 20)
        kwargs.setdefault("ping_interval", None)  # a loaded CI box must not fail a test by keepalive
        return cls(await websockets.connect(url, **kwargs))

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def recv(self, timeout: float = 60) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        message = json.loads(raw)
        self.seen.append(message)
        return message

    async def until(self, kind: str, timeout: float = 120) -> list[dict[str, Any]]:
        """Messages up to and including the first of type `kind`."""
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.recv(max(0.1, deadline - loop.time()))
            got.append(message)
            if message.get("type") == kind:
                return got

    async def close(self) -> None:
        await self.ws.close()


def ws_url(base: str, path: str = "/v1/ws", **query: str) -> str:
    from urllib.parse import urlencode

    url = base.replace("http://", "ws://") + path
    return f"{url}?{urlencode(query)}" if query else url
