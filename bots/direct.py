"""Direct wiring: answer each inbound message with the brain and send the reply at once.

The simplest composition of a channel and the brain, for one process and for tests. The
durable flow (inbox/outbox streams in Redis) replaces it by handing adapters other
handlers; adapters do not change.
"""

from __future__ import annotations

from typing import Protocol

from brain.pipeline import Brain
from brain.types import Feedback, Inbound, Reply


class Sender(Protocol):
    """Anything that delivers a reply to a conversation: every adapter is one."""

    async def send(self, conversation_id: str, reply: Reply) -> None: ...


class DirectWiring:
    """Handlers for an adapter: `on_message` runs the brain, then `sender.send`s the reply.

    The adapter needs the handlers and the wiring needs the adapter, so `sender` is set
    after both are built.
    """

    def __init__(self, brain: Brain, sender: Sender | None = None) -> None:
        self.brain = brain
        self.sender = sender

    async def on_message(self, inbound: Inbound) -> None:
        if self.sender is None:
            raise RuntimeError("DirectWiring.sender is not set")
        reply = await self.brain.handle(inbound)
        await self.sender.send(inbound.conversation_id, reply)

    async def on_feedback(self, feedback: Feedback) -> None:
        await self.brain.feedback(feedback)
