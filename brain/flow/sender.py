"""Senders: deliver outbox replies through their channel's adapter, in order, then finish.

A sender is an `OrderedConsumer` of the `outbox` stream in group `senders`: replies of
one conversation go out in the order they were written, whichever process sends them.
Rate limits (`RetryAfter`) wait as long as the platform asks; network errors back off
exponentially; both are retried for `give_up_after` seconds, then the reply is left
pending and tried again after `reclaim_idle` (nothing is dropped). A permanent failure
(`DeliveryFailed`, or an adapter bug) is logged and recorded in the `undelivered` stream.

Delivery to a platform is at-least-once: a process that dies after the platform took a
reply but before finishing the entry sends it again after reclaim. The window is one
Redis round trip; the http channel sends `in_reply_to` so a receiver can drop a repeat.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from brain.channel import Adapter, DeliveryFailed, NetworkError, RetryAfter
from brain.flow.consumer import Conversation, OrderedConsumer, Postpone
from brain.flow.stream import OUTBOX_GROUP, Outgoing
from brain.keys import RedisKeys
from brain.metrics import record_delivery

log = logging.getLogger(__name__)
UNDELIVERED_MAXLEN = 100_000


class wait_retry_after(wait_base):
    """Wait what a `RetryAfter` asks for; otherwise exponential backoff with jitter."""

    def __init__(self, backoff: wait_base, longest: float) -> None:
        self.backoff = backoff
        self.longest = longest

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, RetryAfter):
            return min(error.seconds, self.longest)
        return self.backoff(retry_state)


class Sender(OrderedConsumer[Outgoing]):
    """Delivers outbox replies with the adapter registered for their channel."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        adapters: Mapping[str, Adapter],
        consumer: str,
        *,
        lock_timeout: float = 10.0,
        reclaim_idle: float = 60.0,
        give_up_after: float = 60.0,
        longest_wait: float = 30.0,
        block_seconds: float = 1.0,
    ) -> None:
        super().__init__(
            redis,
            keys,
            stream=keys.outbox,
            group=OUTBOX_GROUP,
            consumer=consumer,
            lock_timeout=lock_timeout,
            reclaim_idle=reclaim_idle,
            block_seconds=block_seconds,
        )
        self.adapters = adapters
        self.give_up_after = give_up_after
        self.wait = wait_retry_after(wait_exponential_jitter(initial=0.2, max=10.0), longest_wait)
        self.latencies: list[float] = []  # received -> delivered, seconds (bench, metrics)

    def decode(self, data: str) -> Outgoing:
        return Outgoing.from_json(data)

    def conversation_of(self, record: Outgoing) -> Conversation:
        return record.conversation

    async def process(self, record: Outgoing) -> str | None:
        adapter = self.adapters.get(record.channel)
        if adapter is None:
            raise Postpone(f"no {record.channel} channel runs in this process")
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((RetryAfter, NetworkError)),
            wait=self.wait,
            stop=stop_after_delay(self.give_up_after),
            reraise=True,
            before_sleep=self._log_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await adapter.send(record.conversation_id, record.reply)
        except (RetryAfter, NetworkError) as exc:
            raise Postpone(f"{record.channel} unreachable: {exc}") from exc
        except Exception as exc:  # DeliveryFailed, or a bug in an adapter: do not loop on it
            if isinstance(exc, DeliveryFailed):
                log.error("conversation %s: reply not delivered: %s", record.conversation_id, exc)
            else:
                log.exception("conversation %s: adapter failed", record.conversation_id)
            await self._record_undelivered(record, exc)
            return None
        if record.reply.text:
            record_delivery(record.channel, record.received)
        if record.received:
            self.latencies.append(time.time() - record.received)
            del self.latencies[:-10_000]
        return None

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        attempt = state.attempt_number
        log.warning("%s: delivery attempt %d failed (%s)", self.consumer, attempt, error)

    async def _record_undelivered(self, record: Outgoing, error: BaseException) -> None:
        entry = {
            "channel": record.channel,
            "conversation": record.conversation_id,
            "in_reply_to": record.reply.in_reply_to,
            "error": f"{type(error).__name__}: {error}",
            "data": record.to_json(),
            "time": json.dumps(time.time()),
        }
        try:
            await self.redis.xadd(
                self.keys.undelivered,
                entry,  # type: ignore[arg-type]
                maxlen=UNDELIVERED_MAXLEN,
                approximate=True,
            )
        except (RedisError, OSError):
            log.error("could not record an undelivered reply: %s", entry)
