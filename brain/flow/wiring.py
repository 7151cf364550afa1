"""The message flow of one process, wired: the intake, brain workers and reply senders.

`deskmate serve`, the flow and channel tests and the benchmarks all build it here, so what
they run is what production runs. It is built in two steps because the pieces depend on
each other in that order: adapters hand messages to `flow.intake.handler`, and senders
deliver through the adapters.

    flow = Flow(redis, keys, name="host-1234")
    telegram = TelegramAdapter(settings, flow.intake.handler, brain.feedback, redis=redis)
    async with telegram, flow.running(brain.handle, {telegram.channel: telegram}):
        ...  # messages are answered until the block is left
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from brain.channel import Adapter
from brain.flow.consumer import OrderedConsumer
from brain.flow.partials import PartialShower
from brain.flow.sender import Sender
from brain.flow.stream import Intake
from brain.flow.worker import AnswerFunction, BrainWorker, StreamingAnswerFunction
from brain.keys import RedisKeys

STOP_TIMEOUT_SECONDS = 10.0


class Flow:
    """Intake, brain workers and senders on one Redis, named after their process.

    `lock_timeout` and `reclaim_idle` are the consumers' (DESKMATE_LOCK_TIMEOUT,
    DESKMATE_RECLAIM_IDLE); `block_seconds` is how long an idle consumer waits on Redis
    for new work, and so how long it takes to notice a stop."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        *,
        name: str,
        lock_timeout: float = 10.0,
        reclaim_idle: float = 60.0,
        block_seconds: float = 1.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.name = name
        self.lock_timeout = lock_timeout
        self.reclaim_idle = reclaim_idle
        self.block_seconds = block_seconds
        self.intake = Intake(redis, keys)
        self.workers: list[BrainWorker] = []
        self.senders: list[Sender] = []
        self.shower: PartialShower | None = None

    @property
    def consumers(self) -> list[OrderedConsumer[Any]]:
        """The workers and senders started so far."""
        return [*self.workers, *self.senders]

    def start(
        self,
        answer: AnswerFunction | None,
        adapters: Mapping[str, Adapter],
        *,
        workers: int,
        senders: int,
        stop: asyncio.Event,
        staff_channel: str | None = None,
        streaming: StreamingAnswerFunction | None = None,
        show_partials: bool = False,
    ) -> list[asyncio.Task[None]]:
        """Run `workers` brain workers answering with `answer` and `senders` senders
        delivering through `adapters` (by channel name), each as a task until `stop` is set.

        No senders run without adapters: there would be nothing to deliver through, and
        another process's senders deliver the replies. `staff_channel` is the outbox
        channel of the support team's desk (`brain.flow.staff_notices`), if there is one.
        `answer` may be None only without workers (a process that only receives and sends).

        Partial answers (DESKMATE_STREAM_REPLIES, `brain.flow.partials`): with `streaming`
        the workers answer with it and write the answer so far; with `show_partials` this
        process shows what any process's workers write, through its adapters that can.
        """
        if workers and answer is None:
            raise ValueError("brain workers need an answer function")
        new_workers = [
            BrainWorker(
                self.redis,
                self.keys,
                answer,
                f"{self.name}-worker{len(self.workers) + n}",
                lock_timeout=self.lock_timeout,
                reclaim_idle=self.reclaim_idle,
                staff_channel=staff_channel,
                block_seconds=self.block_seconds,
                streaming=streaming,
            )
            for n in range(workers)
            if answer is not None
        ]
        new_senders = [
            Sender(
                self.redis,
                self.keys,
                adapters,
                f"{self.name}-sender{len(self.senders) + n}",
                lock_timeout=self.lock_timeout,
                reclaim_idle=self.reclaim_idle,
                block_seconds=self.block_seconds,
            )
            for n in range(senders if adapters else 0)
        ]
        self.workers += new_workers
        self.senders += new_senders
        started: list[OrderedConsumer[Any]] = [*new_workers, *new_senders]
        tasks = [
            asyncio.create_task(consumer.run(stop), name=consumer.consumer) for consumer in started
        ]
        if show_partials and self.shower is None:
            shower = PartialShower(
                self.redis, self.keys, adapters, self.name, block_seconds=self.block_seconds
            )
            if shower.adapters:  # a task ending early would read as a crash in `serve`
                self.shower = shower
                tasks.append(asyncio.create_task(shower.run(stop), name=f"{self.name}-partials"))
        return tasks

    @asynccontextmanager
    async def running(
        self,
        answer: AnswerFunction,
        adapters: Mapping[str, Adapter],
        *,
        workers: int = 1,
        senders: int = 1,
        staff_channel: str | None = None,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
        streaming: StreamingAnswerFunction | None = None,
        show_partials: bool = False,
    ) -> AsyncIterator[Flow]:
        """`start` for the length of an `async with` block. Leaving it stops the consumers
        and waits up to `stop_timeout` seconds for them to finish the entries in hand; a
        consumer that crashed meanwhile raises its error here."""
        stop = asyncio.Event()
        tasks = self.start(
            answer,
            adapters,
            workers=workers,
            senders=senders,
            stop=stop,
            staff_channel=staff_channel,
            streaming=streaming,
            show_partials=show_partials,
        )
        try:
            yield self
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), stop_timeout)
