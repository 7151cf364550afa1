"""A fake receiver for the http channel's reply callbacks: an aiohttp app on port 0 that
records every request (path, headers, JSON body), optionally failing the first ones."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    time: float


@dataclass
class CallbackServer:
    """Records callbacks; `fail_with` holds statuses to answer the next requests with.
    `delay`: seconds a callback takes after it was recorded (a slow receiver: a sender
    killed meanwhile has delivered it without knowing)."""

    received: list[Received] = field(default_factory=list)
    fail_with: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    async def _handle(self, request: web.Request) -> web.Response:
        if self.fail_with:
            status, headers = self.fail_with.pop(0)
            return web.json_response({"error": "try later"}, status=status, headers=headers)
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body, time.time()))
        self._arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"ok": True})

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def counts(self) -> Counter[str]:
        """Replies received per inbound message id."""
        return Counter(r.body["in_reply_to"] for r in self.received)

    def order(self) -> dict[str, list[str]]:
        """In-reply-to message ids per conversation, in arrival order."""
        orders: dict[str, list[str]] = {}
        for r in self.received:
            orders.setdefault(r.body["conversation_id"], []).append(r.body["in_reply_to"])
        return orders

    async def wait_for(self, count: int, timeout: float) -> None:
        """Until `count` replies have arrived (AssertionError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.received)} of {count} replies after {timeout}s")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.2))
