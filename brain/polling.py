"""A background task that calls a check every few seconds: how running processes follow
what another process published in Redis (the active model version, the FAQ index)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Poller:
    """Runs `check` every `interval` seconds from `start` until `stop`."""

    def __init__(self, check: Callable[[], Awaitable[object]], interval: float, name: str) -> None:
        self.check = check
        self.interval = interval
        self.name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()
