"""The support team's desk in Slack: handed-off conversations, whatever their channel.

With DESKMATE_SLACK_STAFF_CHANNEL set, the Slack channel carries a `StaffDesk`:

- Escalations. When the brain hands a conversation off, the sender delivers a staff
  notice (see `brain.flow.staff_notices`) here: the desk posts the reason, who and
  where, the conversation so far and a Resolve button to the staff channel, and keeps
  the message's ts on the conversation (`handoff:{channel}:{id}` fields `staff_channel`,
  `staff_ts`; reverse key `handoff:thread:{ts}`). What the customer writes meanwhile
  is posted into that thread.
- Agents. A person's reply in an escalation's thread goes into the durable inbox as an
  `Inbound(agent=True)` of the customer's conversation; the brain records it as an `agent`
  turn and the sender delivers it to the customer on their own channel.
- Claim, release, transfer. *I'll take it*, Release and the colleague picker (or `claim`,
  `release`, `transfer @colleague` typed in the thread) move the handoff's state machine;
  `note: ...` in the thread stays with the team.
- Resolve. The Resolve button, or `resolve` typed in the thread, gives the conversation back
  to the bot (through the inbox too, so the customer is told in order) and marks the
  escalation resolved by whom.
- The periodic check (`check`, every `CHECK_SECONDS` in every process, on an injectable
  clock): after-hours handoffs join the queue when the team's hours begin, an unclaimed one
  gets one on-call reminder, an idle claimed one goes back to the bot, and one a dead worker
  left `requested` is routed.

The desk's listeners are registered on the Slack app before the channel's own, so messages
in the staff channel are never answered as customer questions. Bots' messages, edits,
joins and messages outside an escalation's thread are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, cast, get_args

import redis.asyncio as aioredis
from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.errors import delivering
from bots.slack.render import Block, escape, plain_text, split_text, to_mrkdwn
from brain.channel import Handler
from brain.conversations import ConversationStore
from brain.flow.staff_notices import STAFF_CHANNEL, customer_conversation
from brain.handoff.machine import Change, Event, Handoff, State
from brain.pipeline import IDLE_TIMEOUT, RESOLVE
from brain.settings import Settings
from brain.types import Channel, Inbound, Reply, Turn

log = logging.getLogger(__name__)

RESOLVE_ACTION = "deskmate_handoff_resolve"
CLAIM_ACTION = "deskmate_handoff_claim"
RELEASE_ACTION = "deskmate_handoff_release"
TRANSFER_ACTION = "deskmate_handoff_transfer"
RESOLVE_BLOCK = "deskmate_handoff"
STATUS_BLOCK = "deskmate_handoff_status"
RESOLVE_WORDS = frozenset({"resolve", "resolved", "/resolve", "/deskmate resolve"})
_NOTE = re.compile(r"^\s*note\s*:", re.IGNORECASE)
_TRANSFER = re.compile(r"^\s*transfer\s+(?:to\s+)?<@([A-Z0-9]+)(?:\|[^>]*)?>\s*$", re.IGNORECASE)
CHECK_SECONDS = 30.0  # how often the desk looks for timeouts and unclaimed escalations
STUCK_REQUEST_SECONDS = 30.0  # a handoff still `requested` this long lost its worker
SHOWN_TURNS = 12  # the conversation so far, as posted: its last turns
TURN_CHARS = 600
MAX_TRANSCRIPT_SECTIONS = 8
MESSAGE_CHARS = 3000
ROLE_NAMES = {"user": "Customer", "assistant": "Bot", "agent": "Agent"}


# -- pure rendering and translation ------------------------------------------------


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def customer_label(channel: str, user_id: str) -> str:
    """Who the customer is, as mrkdwn: a mention for Slack users, else their platform id."""
    if not user_id:
        return "unknown"
    if channel == "slack":
        return f"<@{escape(user_id)}>"
    return f"`{escape(user_id)}`"


def until_handoff(history: Sequence[Turn]) -> list[Turn]:
    """The turns up to and including the bot's last handoff message (what came after it is
    posted into the thread one message at a time)."""
    for index in range(len(history) - 1, -1, -1):
        if history[index].role == "assistant" and history[index].action == "handoff":
            return list(history[: index + 1])
    return list(history)


def transcript_lines(history: Sequence[Turn]) -> list[str]:
    """One mrkdwn line per turn, every text escaped and clipped."""
    lines = []
    for turn in history[-SHOWN_TURNS:]:
        text = turn.text if len(turn.text) <= TURN_CHARS else turn.text[:TURN_CHARS] + " …"
        name = f"*{ROLE_NAMES.get(turn.role, turn.role)}*"
        if turn.role == "agent" and turn.user_id:
            name += f" <@{escape(turn.user_id)}>"
        lines.append(f"{name}: {to_mrkdwn(text)}")
    return lines


def render_escalation(
    conversation_id: str, state: Mapping[str, str], history: Sequence[Turn]
) -> tuple[str, list[Block]]:
    """(notification text, blocks) of an escalation: reason, who and where, the conversation
    so far, and the Resolve button."""
    channel = state.get("channel", "?")
    reason = state.get("reason", "handed off")
    who = customer_label(channel, state.get("user", ""))
    blocks: list[Block] = [
        _section(f":raising_hand: *Handoff:* {escape(reason)}"),
        _context(f"{escape(channel)} · conversation `{escape(conversation_id)}` · customer {who}"),
    ]
    lines = transcript_lines(until_handoff(history)) or ["_(no messages kept)_"]
    sections = split_text("\n".join(lines))
    blocks += [_section(text) for text in sections[:MAX_TRANSCRIPT_SECTIONS]]
    blocks.append(
        _context(
            "Reply in this thread to answer the customer; `note: ...` stays internal. "
            "*I'll take it* claims it; `claim`, `release`, `transfer @colleague` and `resolve` "
            "work typed in the thread too. *Resolve* gives the conversation back to the bot."
        )
    )
    blocks += handoff_controls(conversation_id, state)
    return escape(f"Handoff from {channel}: {reason}"), blocks


def handoff_controls(conversation_id: str, state: Mapping[str, str]) -> list[Block]:
    """Who has the escalation, and its buttons: "I'll take it" while nobody does, else
    Release; a colleague picker to transfer it; Resolve."""
    agent = state.get("agent", "")
    if state.get("state") == "claimed" and agent:
        status = f":bust_in_silhouette: Claimed by <@{escape(agent)}>"
        first: Block = _button(RELEASE_ACTION, "Release", conversation_id)
    else:
        waiting = (
            "waiting for the team (after hours)"
            if state.get("state") == "after_hours"
            else "waiting for someone to take it"
        )
        status = f":hourglass_flowing_sand: Unclaimed: {waiting}"
        first = {**_button(CLAIM_ACTION, "I'll take it", conversation_id), "style": "primary"}
    picker: Block = {
        "type": "users_select",
        "action_id": TRANSFER_ACTION,
        "placeholder": {"type": "plain_text", "text": "Transfer to…"},
    }
    resolve = _button(RESOLVE_ACTION, "Resolve", conversation_id)
    return [
        {**_context(status), "block_id": STATUS_BLOCK},
        {"type": "actions", "block_id": RESOLVE_BLOCK, "elements": [first, picker, resolve]},
    ]


def _button(action_id: str, label: str, value: str) -> Block:
    return {
        "type": "button",
        "action_id": action_id,
        "value": value,
        "text": {"type": "plain_text", "text": label},
    }


def without_controls(blocks: Sequence[Block]) -> list[Block]:
    """An escalation's blocks without its status and buttons."""
    return [b for b in blocks if b.get("block_id") not in (RESOLVE_BLOCK, STATUS_BLOCK)]


def with_controls(
    blocks: Sequence[Block], conversation_id: str, state: Mapping[str, str]
) -> list[Block]:
    """An escalation's blocks with its status and buttons brought up to date."""
    return [*without_controls(blocks), *handoff_controls(conversation_id, state)]


def is_note(text: str) -> bool:
    """An internal note in an escalation's thread (`note: ...`): never sent to the customer."""
    return bool(_NOTE.match(text))


def transfer_target(text: str) -> str | None:
    """The colleague of `transfer @colleague` typed in a thread (as Slack sends the mention)."""
    match = _TRANSFER.match(text)
    return match[1] if match else None


def resolved_blocks(blocks: Sequence[Block], agent_id: str) -> list[Block]:
    """An escalation's blocks with the Resolve button replaced by who resolved it."""
    kept = without_controls(blocks)
    note = (
        f":white_check_mark: Resolved by <@{escape(agent_id)}>; the customer is back with the bot."
    )
    return [*kept, _context(note)]


def customer_message(text: str) -> str:
    """A customer's message as posted into an escalation's thread."""
    clipped = text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + " …"
    return f"*Customer:* {to_mrkdwn(clipped)}"


@dataclass(frozen=True, slots=True)
class ThreadReply:
    """A person's message in a thread of the staff channel."""

    thread_ts: str
    user_id: str
    ts: str
    text: str


def to_thread_reply(event: Mapping[str, Any], staff_channel: str) -> ThreadReply | None:
    """A staff-channel `message` event as a `ThreadReply`, or None for what is not a
    person's reply in a thread: bots, edits, deletions, joins, top-level messages."""
    if event.get("type") != "message" or event.get("subtype"):
        return None
    if event.get("bot_id") or event.get("bot_profile") or event.get("channel") != staff_channel:
        return None
    user, ts, thread_ts, text = (event.get(k) for k in ("user", "ts", "thread_ts", "text"))
    if not (isinstance(user, str) and user and isinstance(ts, str) and isinstance(thread_ts, str)):
        return None
    if thread_ts == ts:
        return None
    return ThreadReply(thread_ts, user, ts, text if isinstance(text, str) else "")


def is_resolve(text: str) -> bool:
    """Whether a thread reply asks to resolve the handoff ("resolve", "resolved.")."""
    return text.strip().strip(".!").lower() in RESOLVE_WORDS


# -- the desk ---------------------------------------------------------------------


class StaffDesk:
    """The staff side of handoffs in one Slack channel (see the module docstring). An
    `Adapter` of the outbox channel `STAFF_CHANNEL`; it receives through the Slack
    channel's app, which `register` adds its listeners to."""

    channel: ClassVar[str] = STAFF_CHANNEL

    def __init__(
        self,
        settings: Settings,
        client: AsyncWebClient,
        redis: aioredis.Redis,
        on_message: Handler,
        *,
        clock: Callable[[], float] = time.time,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.staff_channel = settings.slack_staff_channel
        self.client = client
        self.on_message = on_message
        self.store = ConversationStore(
            redis,
            prefix=settings.redis_prefix,
            history_turns=settings.history_turns,
            ttl_seconds=settings.history_ttl,
        )
        self.bot_user_id = ""  # set by the Slack channel once signed in
        self.hours = settings.opening_hours
        self.oncall_group = settings.handoff_oncall_group
        self.oncall_seconds = settings.handoff_oncall_seconds
        self.idle_seconds = settings.handoff_idle_seconds
        self.clock = clock  # the periodic check's time (tests move it on)
        self.check_seconds = check_seconds  # how often it runs
        self._checks: asyncio.Task[None] | None = None

    def register(self, app: AsyncApp) -> None:
        """Listen on `app` for the staff channel's messages and the Resolve button. Call
        before the app's other listeners: bolt runs the first listener that matches."""
        app.event("message", matchers=[self._in_staff_channel])(self._on_staff_message)
        app.event("app_mention", matchers=[self._in_staff_channel])(self._ignore)
        app.action(RESOLVE_ACTION)(self._on_resolve_action)
        app.action(CLAIM_ACTION)(self._on_control_action)
        app.action(RELEASE_ACTION)(self._on_control_action)
        app.action(TRANSFER_ACTION)(self._on_control_action)

    async def __aenter__(self) -> Self:
        self._checks = asyncio.create_task(self._check_periodically(), name="staff-desk-checks")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._checks is not None:
            self._checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checks

    def web_routes(self) -> list[web.RouteDef]:
        """None: the desk receives through the Slack channel's endpoint or socket."""
        return []

    # -- from the brain: escalations and the customer's messages ---------------------

    async def send(self, conversation_id: str, reply: Reply) -> str | None:
        """Deliver a staff notice about the customer's conversation `conversation_id`
        (`{channel}:{id}`): open an escalation, or post the customer's message into its
        thread. The `ts` of the message posted (kept in the delivery record), if any."""
        channel, customer_id = customer_conversation(conversation_id)
        if reply.action == "handoff":
            return await delivering(lambda: self._escalate(channel, customer_id, reply))
        return await delivering(lambda: self._post_in_thread(channel, customer_id, reply))

    async def _escalate(self, channel: str, conversation_id: str, reply: Reply) -> str | None:
        state = await self.store.handoff(channel, conversation_id)
        if state is None:
            log.info("conversation %s: handoff ended before it was posted", conversation_id)
            return None
        if state.get("staff_ts"):  # asked again, or a delivery retried after posting
            return await self._post_in_thread(channel, conversation_id, reply)
        history = await self.store.history(channel, conversation_id)
        text, blocks = render_escalation(conversation_id, state, history)
        posted = await self.client.chat_postMessage(
            channel=self.staff_channel,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
        ts = str(posted["ts"])
        if not await self.store.attach_staff_thread(
            channel, conversation_id, self.staff_channel, ts
        ):
            # Cancelled (or posted by another process) meanwhile: say so on this post.
            log.info("conversation %s: handoff changed while it was posted", conversation_id)
            with contextlib.suppress(SlackApiError):
                await self.client.chat_update(
                    channel=self.staff_channel,
                    ts=ts,
                    text=text,
                    blocks=[
                        *without_controls(blocks),
                        _context("The customer went back to the bot before this was posted."),
                    ],
                )
            return ts
        log.info("conversation %s: escalated to %s", conversation_id, self.staff_channel)
        return ts

    async def _post_in_thread(self, channel: str, conversation_id: str, reply: Reply) -> str | None:
        state = await self.store.handoff(channel, conversation_id)
        thread_ts = (state or {}).get("staff_ts")
        if not thread_ts or not reply.text:
            log.info("conversation %s: no escalation thread to post into", conversation_id)
            return None
        posted = await self.client.chat_postMessage(
            channel=self.staff_channel,
            thread_ts=thread_ts,
            text=customer_message(reply.text),
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(posted["ts"])

    # -- from Slack: agents' replies and resolve ---------------------------------------

    async def _in_staff_channel(self, body: dict[str, Any]) -> bool:
        return bool((body.get("event") or {}).get("channel") == self.staff_channel)

    async def _ignore(self) -> None:
        return None

    async def _on_staff_message(self, event: dict[str, Any]) -> None:
        message = to_thread_reply(event, self.staff_channel)
        if message is None or message.user_id == self.bot_user_id:
            return
        found = await self._conversation(message.thread_ts)
        if found is None:
            return
        channel, conversation_id, state = found
        text = plain_text(message.text, self.bot_user_id)
        if is_resolve(text):
            await self._resolve(channel, conversation_id, state, message.thread_ts, message.user_id)
            return
        if not text or is_note(text):
            return  # an internal note: for the team only
        word = text.strip().strip(".!").lower()
        target = transfer_target(message.text)
        if word in ("claim", "release") or target:
            control = (
                Event.TRANSFER if target else Event.CLAIM if word == "claim" else Event.RELEASE
            )
            await self._control(
                channel, conversation_id, message.thread_ts, message.user_id, control, target or ""
            )
            return
        await self.on_message(
            Inbound(
                channel=channel,
                conversation_id=conversation_id,
                user_id=message.user_id,
                message_id=f"agent:{message.ts}",
                text=text,
                time=float(message.ts),
                is_staff=True,
                agent=True,
            )
        )

    async def _on_resolve_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        message = body.get("message") or {}
        ts = message.get("ts")
        agent = (body.get("user") or {}).get("id")
        if (body.get("channel") or {}).get("id") != self.staff_channel or not ts or not agent:
            return
        found = await self._conversation(str(ts))
        if found is None:
            return
        channel, conversation_id, state = found
        await self._resolve(
            channel, conversation_id, state, str(ts), str(agent), message.get("blocks")
        )

    async def _on_control_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Claim, release or transfer pressed on an escalation."""
        await ack()
        message = body.get("message") or {}
        ts = message.get("ts")
        agent = (body.get("user") or {}).get("id")
        action = (body.get("actions") or [{}])[0]
        if (body.get("channel") or {}).get("id") != self.staff_channel or not ts or not agent:
            return
        found = await self._conversation(str(ts))
        if found is None:
            return
        channel, conversation_id, _ = found
        kind = action.get("action_id")
        events = {CLAIM_ACTION: Event.CLAIM, RELEASE_ACTION: Event.RELEASE}
        event = events.get(str(kind), Event.TRANSFER)
        target = str(action.get("selected_user") or "")
        if event is Event.TRANSFER and not target:
            return
        await self._control(
            channel, conversation_id, str(ts), str(agent), event, target, message.get("blocks")
        )

    async def _control(
        self,
        channel: Channel,
        conversation_id: str,
        thread_ts: str,
        agent_id: str,
        event: Event,
        target: str = "",
        blocks: Sequence[Block] | None = None,
    ) -> None:
        """Apply claim / release / transfer and show everyone who has the escalation now.
        A second claim (a colleague's, or Slack retrying) finds it taken: the escalation
        is shown as it stands, and the refusal goes into the thread for the one who tried."""
        change = Change(event, agent=agent_id, to_agent=target)
        outcome = await self.store.handoffs.apply(channel, conversation_id, change)
        record = outcome.after
        if not outcome.applied and not (event is Event.CLAIM and record.agent == agent_id):
            with contextlib.suppress(SlackApiError):
                taken = f"<@{escape(record.agent)}> has it" if record.agent else outcome.why
                await self.client.chat_postMessage(
                    channel=self.staff_channel,
                    thread_ts=thread_ts,
                    text=f"<@{escape(agent_id)}>: not done, {taken}.",
                )
        if blocks is None:
            history = await self.store.history(channel, conversation_id)
            blocks = render_escalation(conversation_id, record.to_hash(), history)[1]
        if not record.held:
            return
        try:
            await self.client.chat_update(
                channel=self.staff_channel,
                ts=thread_ts,
                text=f"Handoff from {channel}: {escape(record.reason)}",
                blocks=with_controls(blocks, conversation_id, record.to_hash()),
            )
        except SlackApiError as exc:
            log.warning("conversation %s: escalation not updated (%s)", conversation_id, exc)

    # -- timeouts and reminders ------------------------------------------------------

    async def _check_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                await self.check()
            except Exception:
                log.exception("staff desk: checking open handoffs failed; trying again later")

    async def check(self, now: float | None = None) -> None:
        """One look at the open handoffs (at `now`, default the desk's clock): into the
        queue when the team's hours begin, back to the bot when a claimed one went idle
        (through the inbox, so the customer is told in order), a reminder for the on-call
        group on one that waited unclaimed too long within business hours, and routing one
        its worker left `requested`. Every process may run it: each step is a
        compare-and-set on the record (or a deduplicated inbox message), so it happens
        once. A failure on one handoff is logged and the others are still looked at."""
        now = self.clock() if now is None else now
        open_now = self.hours is None or self.hours.is_open(datetime.fromtimestamp(now, UTC))
        for entry in await self.store.handoffs.open_handoffs(now):
            record = entry.handoff
            if record.channel not in get_args(Channel):
                continue
            try:
                await self._check_one(record, now, open_now)
            except Exception:
                log.exception(
                    "conversation %s: checking its handoff failed", record.conversation_id
                )

    async def _check_one(self, record: Handoff, now: float, open_now: bool) -> None:
        channel, conversation_id = cast(Channel, record.channel), record.conversation_id
        handoffs = self.store.handoffs
        if record.state is State.REQUESTED and now - record.since >= STUCK_REQUEST_SECONDS:
            # Its worker died between the two steps of a request: route it now.
            change = Change(Event.ROUTE, open_now=open_now, expect_version=record.version)
            await handoffs.apply(channel, conversation_id, change, now=now)
        elif record.state is State.AFTER_HOURS and open_now:
            change = Change(Event.OPEN, expect_version=record.version)
            opened = await handoffs.apply(channel, conversation_id, change, now=now)
            if opened.applied and opened.after.staff_ts:
                await self._show(opened.after)  # no longer "after hours" on the escalation
        elif record.state is State.CLAIMED and self.idle_seconds:
            if now - record.last_activity >= self.idle_seconds:
                await self.on_message(
                    Inbound(
                        channel=channel,
                        conversation_id=conversation_id,
                        user_id=self.bot_user_id or "deskmate",
                        message_id=f"idle:{record.id}:{record.version}",
                        text=IDLE_TIMEOUT,
                        time=now,  # the brain decides on the same clock
                        is_staff=True,
                        agent=True,
                    )
                )
        elif (
            record.state is State.QUEUED
            and open_now
            and self.oncall_seconds
            and record.staff_ts
            and not record.reposted
            and now - (record.queued_at or record.since) >= self.oncall_seconds
        ):
            await self._remind(record, now)

    async def _show(self, record: Handoff) -> None:
        """Bring an escalation's status and buttons up to date with `record`."""
        history = await self.store.history(record.channel, record.conversation_id)
        text, blocks = render_escalation(record.conversation_id, record.to_hash(), history)
        try:
            await self.client.chat_update(
                channel=self.staff_channel, ts=record.staff_ts, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            log.warning("conversation %s: escalation not updated (%s)", record.conversation_id, exc)

    async def _remind(self, record: Handoff, now: float) -> None:
        change = Change(Event.REMIND, expect_version=record.version)
        marked = await self.store.handoffs.apply(
            record.channel, record.conversation_id, change, now=now
        )
        if not marked.applied:
            return  # another process reminded, or someone claimed it meanwhile
        who = f"<!subteam^{escape(self.oncall_group)}>" if self.oncall_group else "<!here>"
        minutes = int((now - (record.queued_at or record.since)) // 60)
        await delivering(
            lambda: self.client.chat_postMessage(
                channel=self.staff_channel,
                thread_ts=record.staff_ts,
                reply_broadcast=True,
                text=f"{who} this handoff has waited {minutes} min unclaimed: "
                f"{escape(record.reason)}. Press *I'll take it* on it.",
            )
        )

    async def _conversation(self, thread_ts: str) -> tuple[Channel, str, dict[str, str]] | None:
        """The channel and id of the handed-off conversation an escalation thread belongs
        to, and its state; None (logged) for a thread that is not, or no longer, one."""
        found = await self.store.conversation_of_thread(thread_ts)
        state = await self.store.handoff(*found) if found else None
        if found is None or state is None:
            log.info("staff thread %s: not a current handoff; ignored", thread_ts)
            return None
        channel, conversation_id = found
        if channel not in get_args(Channel):
            log.warning("conversation %s: handoff has no channel to answer on", conversation_id)
            return None
        return cast(Channel, channel), conversation_id, state

    async def _resolve(
        self,
        channel: Channel,
        conversation_id: str,
        state: Mapping[str, str],
        thread_ts: str,
        agent_id: str,
        blocks: Sequence[Block] | None = None,
    ) -> None:
        if blocks is None:
            history = await self.store.history(channel, conversation_id)
            blocks = render_escalation(conversation_id, state, history)[1]
        # One resolve per escalation: the button and `resolve` typed share the message id.
        await self.on_message(
            Inbound(
                channel=channel,
                conversation_id=conversation_id,
                user_id=agent_id,
                message_id=f"resolve:{thread_ts}",
                text=RESOLVE,
                is_staff=True,
                agent=True,
            )
        )
        try:
            await self.client.chat_update(
                channel=self.staff_channel,
                ts=thread_ts,
                text=f"Resolved by <@{escape(agent_id)}>",
                blocks=resolved_blocks(blocks, agent_id),
            )
        except SlackApiError as exc:
            log.warning(
                "conversation %s: resolved, escalation not updated (%s)", conversation_id, exc
            )
