"""Senders: deliver outbox replies through their channel's adapter, in order, then finish.

A sender is an `OrderedConsumer` of the `outbox` stream in group `senders`: replies of
one conversation go out in the order they were written, whichever process sends them.
Rate limits (`RetryAfter`) wait as long as the platform asks; network errors back off
exponentially; both are retried for `give_up_after` seconds, then the reply is left
pending and tried again after `reclaim_idle` (nothing is dropped). A permanent failure
(`DeliveryFailed`, or an adapter bug) is logged and recorded in the `undelivered` stream.

Every platform call is fenced and recorded (`BEGIN`, one script): it is made only while
this sender still holds the conversation's lock and the entry is still unfinished at the
head of the conversation's list, and it adds one to the entry's delivery record first.
After the platform took the reply the record says so (with the platform's message id
when the adapter returns one) and the entry is finished. So a sender paused past its lock
(SIGSTOP, a long GC, a VM migration) never retries a stale reply after newer ones: it
takes the lock again and finds the entry finished, or still first in line.

Delivery to a platform is at-least-once, and what remains is exactly this: a platform
call cut mid-flight (the process killed, or paused past `lock_timeout` and then timed
out, while the request was with the platform) has an unknown outcome, and the reply is
sent again by whoever takes the entry over. Telegram and Slack have no idempotency keys;
the repeat is logged as a redelivery, and an adapter that can mark it implements
`resend` (the http channel sends `"redelivery": true`, so a receiver can drop it). A
process that dies after the platform answered but before the entry is finished does not
send again: the delivery record says delivered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

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
from brain.flow.consumer import Conversation, Holding, LockLost, OrderedConsumer, Postpone
from brain.flow.partials import ReplacesPartials, finish_partial
from brain.flow.stream import OUTBOX_GROUP, Outgoing, call_redis
from brain.keys import DELIVERY_TTL_SECONDS, RedisKeys
from brain.metrics import record_delivery, record_redelivery
from brain.redis_server import RedisUnavailable

log = logging.getLogger(__name__)
UNDELIVERED_MAXLEN = 100_000

# KEYS: conversation lock, conversation's outbox list, the entry's delivery record.
# ARGV: lock token, entry id, record TTL. Before every platform call: 'lost' if the lock
# is no longer ours, 'finished' if another sender finished the entry, 'delivered' if a
# platform call for it already succeeded; else the attempt's number (1 = first).
BEGIN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return 'finished' end
if redis.call('HEXISTS', KEYS[3], 'delivered') == 1 then return 'delivered' end
local attempt = redis.call('HINCRBY', KEYS[3], 'attempts', 1)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return attempt
"""


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
        self.redeliveries = 0  # replies sent again after a call with an unknown outcome
        self._begin = redis.register_script(BEGIN)

    def decode(self, data: str) -> Outgoing:
        return Outgoing.from_json(data)

    def conversation_of(self, record: Outgoing) -> Conversation:
        return record.conversation

    def finish_keys(self, entry_id: str) -> list[str]:
        return [self.keys.delivery(entry_id)]

    async def process(self, record: Outgoing) -> str | None:
        adapter = self.adapters.get(record.channel)
        if adapter is None:
            raise Postpone(f"no {record.channel} channel runs in this process")
        holding = self.holding
        if holding is None:
            raise RuntimeError("Sender.process runs only for an entry taken by the sender")
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
                    if not await self._deliver(adapter, record, holding):
                        return None
        except (RetryAfter, NetworkError) as exc:
            raise Postpone(f"{record.channel} unreachable: {exc}") from exc
        except (LockLost, RedisUnavailable):
            raise  # taken again with the lock / once Redis is back: not a delivery failure
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

    async def _deliver(self, adapter: Adapter, record: Outgoing, holding: Holding) -> bool:
        """One fenced platform call; False when there was nothing to send (finished by
        another sender, or delivered already by a sender that died before finishing)."""
        keys = self.keys
        queue = keys.queue(self.stream, *holding.conversation)
        marker = keys.delivery(holding.entry_id)
        token = holding.lock.local.token
        state: Any = await call_redis(
            "recording a delivery attempt",
            self._begin(
                keys=[holding.lock.name, queue, marker],
                args=[token, holding.entry_id, DELIVERY_TTL_SECONDS],
            ),
        )
        if state == "lost":
            raise LockLost(holding.entry_id)
        if state in ("finished", "delivered"):
            if state == "delivered":
                log.info("%s: %s was delivered already", self.consumer, holding.entry_id)
            return False
        resend = getattr(adapter, "resend", None)
        if int(state) > 1:
            # An earlier call for this reply had an unknown outcome (cut mid-flight, or
            # timed out): it may have arrived. Said once here, counted, and marked where
            # the platform lets a receiver drop it.
            self.redeliveries += 1
            record_redelivery(record.channel)
            log.warning(
                "%s: sending a reply to conversation %s again (attempt %s); an earlier "
                "attempt may have reached the platform",
                self.consumer,
                record.conversation_id,
                state,
            )
        try:
            if int(state) > 1 and resend is not None:
                platform_id = await resend(record.conversation_id, record.reply)
            else:
                platform_id = await self._send_over_partial(adapter, record)
        except (RetryAfter, DeliveryFailed):
            # The platform answered and refused it: this attempt certainly did not arrive.
            with contextlib.suppress(RedisUnavailable):
                await call_redis("recording a delivery", self.redis.hincrby(marker, "attempts", -1))
            raise
        # Delivered: a sender taking the entry over from here on finishes it unsent.
        with contextlib.suppress(RedisUnavailable):  # the finish right after tells too
            await call_redis(
                "recording a delivery",
                self.redis.hset(marker, "delivered", str(platform_id or 1)),
            )
        return True

    async def _send_over_partial(self, adapter: Adapter, record: Outgoing) -> str | None:
        """`adapter.send`, except that a reply whose partial answer is shown in a message
        of its own (Telegram) replaces that message (`brain.flow.partials`). Partials are
        marked final first, so none is shown after the reply."""
        shown = None
        if record.reply.in_reply_to:
            with contextlib.suppress(RedisUnavailable, RedisError, OSError):
                shown = await finish_partial(
                    self.redis,
                    self.keys,
                    record.channel,
                    record.conversation_id,
                    record.reply.in_reply_to,
                )
        if shown is not None and isinstance(adapter, ReplacesPartials):
            return await adapter.send_over(record.conversation_id, record.reply, shown)
        return await adapter.send(record.conversation_id, record.reply)

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
