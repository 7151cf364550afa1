"""What the support team is told about handed-off conversations, as outbox records.

When a staff desk is configured (DESKMATE_SLACK_STAFF_CHANNEL), brain workers write, beside
the customer's reply and in the same atomic step, an `Outgoing` record of channel
`STAFF_CHANNEL` about the customer's conversation (`Outgoing.about`; on the desk the
conversation is named `{channel}:{id}`, see `desk_conversation_id`). The sender delivers it
to the desk like any reply (ordered with the conversation's replies, retried through
platform outages, never lost). Its `Reply` is the customer's message as the team should
see it:

- action "handoff": the conversation was just handed off; open an escalation (the desk
  reads the reason, the customer and the conversation so far from the conversation store);
- action "none": a message the customer sent while a person holds the conversation; add
  it to the escalation's thread.

Agents answer through the inbox as `Inbound(agent=True)` messages of the customer's
conversation (see `Brain.handle`), so their answers reach the customer through the same
flow and are recorded as `agent` turns.
"""

from __future__ import annotations

from brain.types import Inbound, Reply

STAFF_CHANNEL = "staff"


def desk_conversation_id(channel: str, conversation_id: str) -> str:
    """How a staff notice names the customer's conversation it is about: `{channel}:{id}`
    (conversation ids are only unique within their channel; channel names hold no colon)."""
    return f"{channel}:{conversation_id}"


def customer_conversation(desk_conversation_id: str) -> tuple[str, str]:
    """(channel, conversation id) of the customer's conversation a staff notice is about."""
    channel, _, conversation_id = desk_conversation_id.partition(":")
    return channel, conversation_id


def staff_notice(inbound: Inbound, reply: Reply) -> Reply | None:
    """What the support team should see about `inbound` answered with `reply`, if anything."""
    if inbound.agent:
        return None
    shown = inbound.text or (f"({inbound.attachment})" if inbound.attachment else "")
    if reply.action == "handoff":
        return Reply(shown, "handoff", in_reply_to=inbound.message_id)
    if reply.action == "none" and not reply.text:  # held: a person has the conversation
        return Reply(shown, "none", in_reply_to=inbound.message_id)
    return None
