"""Brain workers: answer the inbox, write each reply to the outbox, exactly once.

A worker is an `OrderedConsumer` of the `inbox` stream in group `brain`. The reply is
written to `outbox` by the same atomic script that acknowledges the inbound entry, so
a crash either leaves the message pending (it is answered after reclaim) or finished
with its reply queued, never both; a reclaimed message that another worker answered
meanwhile is dropped by that script. A worker that dies or is paused between saving the
turns and finishing the entry has its message answered again by another worker (the
model runs twice); the history keeps the message's turns once
(`ConversationStore.append`) and the customer gets one answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

import redis.asyncio as aioredis

from brain.answering.backends import PartialCallback
from brain.flow.consumer import Conversation, OrderedConsumer
from brain.flow.partials import PartialWriter
from brain.flow.staff_notices import desk_conversation_id, staff_notice
from brain.flow.stream import INBOX_GROUP, Outgoing, inbound_from_json
from brain.keys import RedisKeys
from brain.metrics import record_decision
from brain.redis_server import RedisUnavailable
from brain.types import Inbound, Reply

log = logging.getLogger(__name__)
AnswerFunction = Callable[[Inbound], Awaitable[Reply]]
# `Brain.handle` with partial answers passed on (brain.flow.partials).
StreamingAnswerFunction = Callable[[Inbound, PartialCallback], Awaitable[Reply]]
APOLOGY = "Sorry, something went wrong while answering that. Please try again in a moment."


class BrainWorker(OrderedConsumer[Inbound]):
    """Answers inbox entries with `answer` (normally `Brain.handle`).

    With `staff_channel` (the outbox channel of the support team's desk, see
    `brain.flow.staff_notices`), a handoff also writes an escalation for the support team, and a
    customer's message to a handed-off conversation is passed on to them, in the same
    atomic step as the reply.

    With `streaming` (DESKMATE_STREAM_REPLIES), messages are answered by it instead,
    writing the answer's text so far for the channels to show (`brain.flow.partials`)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        answer: AnswerFunction,
        consumer: str,
        *,
        lock_timeout: float = 10.0,
        reclaim_idle: float = 60.0,
        staff_channel: str | None = None,
        block_seconds: float = 1.0,
        streaming: StreamingAnswerFunction | None = None,
    ) -> None:
        super().__init__(
            redis,
            keys,
            stream=keys.inbox,
            group=INBOX_GROUP,
            consumer=consumer,
            next_stream=keys.outbox,
            lock_timeout=lock_timeout,
            reclaim_idle=reclaim_idle,
            block_seconds=block_seconds,
        )
        self.answer = answer
        self.staff_channel = staff_channel
        self.streaming = streaming
        self.partials = PartialWriter(redis, keys)

    def decode(self, data: str) -> Inbound:
        return inbound_from_json(data)

    def conversation_of(self, record: Inbound) -> Conversation:
        return record.channel, record.conversation_id

    async def process(self, record: Inbound) -> str | tuple[str, ...] | None:
        try:
            if self.streaming is not None:
                reply = await self.streaming(record, self.partials.callback(record))
            else:
                reply = await self.answer(record)
        except RedisUnavailable:
            raise  # left pending; answered once Redis is back
        except Exception:
            # One error boundary per message: log, apologise, keep the worker running.
            log.exception("conversation %s: failed to answer", record.conversation_id)
            reply = Reply(APOLOGY, "none")
        record_decision(record.channel, reply.action, reply.model_version)
        notice = staff_notice(record, reply)
        staff = ""
        if self.staff_channel and notice is not None:
            staff = Outgoing(
                self.staff_channel,
                desk_conversation_id(record.channel, record.conversation_id),
                notice,
                record.time,
                about=(record.channel, record.conversation_id),
            ).to_json()
        if reply.action == "none" and not reply.text and record.agent:
            return staff or None  # an agent's message after the handoff ended: nothing to do
        # A silent reply to the customer's own message (a person holds the conversation) is
        # passed on too: the channel clears what it shows meanwhile (Slack's placeholder,
        # Telegram's typing indicator) and sends nothing.
        reply = replace(reply, in_reply_to=record.message_id)
        customer = Outgoing(record.channel, record.conversation_id, reply, record.time).to_json()
        return (customer, staff) if staff else customer
