"""Direct wiring for channel tests and benches: the brain answers, the adapter sends.

`deskmate serve` wires adapters to the durable inbox/outbox flow instead; this keeps the
channel tests about the channel. Nothing is queued in Redis, so a message being answered
when the process stops is not answered after a restart. It keeps the turns of one
conversation in order and answers different conversations concurrently, without
holding up the adapter that received the message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from brain.pipeline import Brain
from brain.types import Inbound, Reply

log = logging.getLogger(__name__)

Sender = Callable[[str, Reply], Awaitable[None]]
APOLOGY = Reply("Sorry, something went wrong answering that. Please try again.", "none")


class DirectFlow:
    """`on_message` for adapters: answer with `brain`, deliver with the channel's sender."""

    def __init__(self, brain: Brain) -> None:
        self.brain = brain
        self._senders: dict[str, Sender] = {}
        self._tails: dict[str, asyncio.Task[None]] = {}  # last pending turn per conversation

    def attach(self, channel: str, send: Sender) -> None:
        """Deliver replies to messages from `channel` with `send(conversation_id, reply)`."""
        self._senders[channel] = send

    async def on_message(self, inbound: Inbound) -> None:
        """Accept a message: it is answered in the background, after earlier turns of its
        conversation."""
        key = f"{inbound.channel}:{inbound.conversation_id}"
        task = asyncio.create_task(self._answer(inbound, self._tails.get(key)))
        self._tails[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _answer(self, inbound: Inbound, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        send = self._senders[inbound.channel]
        try:
            reply = await self.brain.handle(inbound)
        except Exception:
            # One error boundary per message: log, apologise, keep serving.
            log.exception("conversation %s: failed to answer", inbound.conversation_id)
            reply = APOLOGY
        try:
            await send(inbound.conversation_id, reply)
        except Exception:
            log.exception("conversation %s: failed to deliver the reply", inbound.conversation_id)

    async def drain(self) -> None:
        """Wait for every accepted message to be answered."""
        while self._tails:
            await asyncio.wait(list(self._tails.values()))
