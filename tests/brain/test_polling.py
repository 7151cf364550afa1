"""Poller: a loop that checks every interval and always stops when told to."""

from __future__ import annotations

import asyncio
import contextlib

from brain.polling import Poller


async def test_stop_ends_the_loop_even_when_a_check_swallows_the_cancellation() -> None:
    checks = 0

    async def stubborn_check() -> None:
        nonlocal checks
        checks += 1
        # What a misbehaving library call might do: swallow the cancellation.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)

    poller = Poller(stubborn_check, 0.01, "stubborn")
    poller.start()
    while checks == 0:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(poller.stop(), timeout=5)  # used to wait forever
    await poller.stop()  # stopping twice is harmless


async def test_a_failing_check_is_counted_and_retried() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("redis went away")

    poller = Poller(failing, 0.01, "failing")
    poller.start()
    while calls < 3:
        await asyncio.sleep(0.01)
    await poller.stop()
    assert poller.failures >= 3
