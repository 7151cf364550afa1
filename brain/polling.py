"""A background task that calls a check every few seconds: how running processes follow
what another process published in Redis (the active model version, the FAQ index)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Poller:
    """Runs `check` every `interval` seconds from `start` until `stop`.

    A check that raises is logged and tried again at the next tick: one bad read must
    not leave a process deaf to every later change.
    """

    def __init__(self, check: Callable[[], Awaitable[object]], interval: float, name: str) -> None:
        self.check = check
        self.interval = interval
        self.name = name
        self.failures = 0  # checks that raised (tests, health)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end.

        The loop also ends at its next turn on its own: a library that swallows the
        cancellation inside a check (seen with a Redis command cut short) would otherwise
        send it back to sleep and leave `stop` waiting forever.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # keep following; the next tick tries again
                self.failures += 1
                log.warning(
                    "%s: check failed, retrying: %s: %s", self.name, type(exc).__name__, exc
                )
