"""The handoff loop end to end: a customer on Telegram or Slack is handed to a person in a
Slack staff channel and back, through the durable flow (intake -> brain workers -> outbox
-> senders) as `deskmate serve` wires it, with the real python-telegram-bot, slack-bolt and
slack_sdk clients against the fake platforms, the real brain and real Redis."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots.serve import build_channels, describe_handoffs, handoffs_posted
from bots.slack.render import QUICK_BLOCK
from bots.slack.staff_desk import (
    CLAIM_ACTION,
    RESOLVE_ACTION,
    STUCK_REQUEST_SECONDS,
    TRANSFER_ACTION,
    StaffDesk,
    is_resolve,
    render_escalation,
    to_thread_reply,
)
from bots.staff import StaffCommands
from bots.web import make_web_app, serve_web
from brain.answering.backends import QuoteBackend
from brain.channel import Handler
from brain.conversations import ConversationStore
from brain.flow.staff_notices import STAFF_CHANNEL, staff_notice
from brain.flow.wiring import Flow
from brain.handoff.hours import BusinessHours
from brain.handoff.machine import Change, Event
from brain.keys import RedisKeys
from brain.pipeline import Brain
from brain.settings import Secret, Settings, SettingsError
from brain.types import Inbound, Reply, Turn
from retrieval.retriever import Retriever
from tests.fakes.slack import JSON, FakeSlack, signed_headers
from tests.fakes.telegram import FakeTelegram, button_press, text_message, visible_text
from training.dataset import pick_pairs
from training.transcripts import export_transcripts

SECRET = "handoff-test-signing-secret"
STAFF = "CSTAFF"
AGENT = "UAGENT"
CHECK_EVERY = 0.02  # the desk's periodic check, instead of every 30 s
_ids = itertools.count(1)


def slack_ts() -> str:
    return f"{1700100000 + next(_ids)}.000400"


@dataclass
class Running:
    """`deskmate serve`'s parts in this process, and the means to talk to them."""

    telegram: FakeTelegram
    slack: FakeSlack
    endpoint: str
    session: aiohttp.ClientSession
    redis: aioredis.Redis
    settings: Settings
    on_message: Handler  # the durable intake
    desk: StaffDesk | None

    async def _post(self, body: str, content_type: str) -> int:
        headers = signed_headers(body, SECRET, content_type)
        async with self.session.post(self.endpoint, data=body.encode(), headers=headers) as reply:
            return reply.status

    async def event(self, event: JSON) -> None:
        envelope = {
            "token": "legacy",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": f"EvH{next(_ids):06d}",
            "event_time": int(time.time()),
            "event": event,
        }
        assert await self._post(json.dumps(envelope), "application/json") == 200

    async def press_resolve(self, escalation: JSON, user: str = AGENT) -> None:
        press = {
            "type": "block_actions",
            "team": {"id": "T1"},
            "user": {"id": user},
            "api_app_id": "A1",
            "channel": {"id": STAFF},
            "container": {"type": "message", "message_ts": escalation["ts"], "channel_id": STAFF},
            "message": {
                "type": "message",
                "ts": escalation["ts"],
                "text": escalation["text"],
                "blocks": escalation["blocks"],
                "bot_id": "BBOT",
            },
            "actions": [
                {
                    "type": "button",
                    "action_id": RESOLVE_ACTION,
                    "block_id": "deskmate_handoff",
                    "value": "x",
                    "action_ts": str(time.time()),
                }
            ],
            "trigger_id": "1.2.3",
            "response_url": f"{self.slack.url}/response/1",
        }
        body = urlencode({"payload": json.dumps(press)})
        assert await self._post(body, "application/x-www-form-urlencoded") == 200

    def posts(self, channel: str) -> list[JSON]:
        return [p for p in self.slack.payloads("chat.postMessage") if p["channel"] == channel]

    def escalations(self) -> list[JSON]:
        """Escalations posted to the staff channel, with the ts Slack gave each."""
        return [
            {**payload, "ts": response["ts"]}
            for payload, response in zip(
                self.slack.payloads("chat.postMessage"),
                self.slack.responses("chat.postMessage"),
                strict=True,
            )
            if payload["channel"] == STAFF and not payload.get("thread_ts")
        ]

    def in_thread(self, ts: str) -> list[str]:
        return [p["text"] for p in self.posts(STAFF) if p.get("thread_ts") == ts]

    def customer_texts(self) -> list[str]:
        return [visible_text(m["text"]) for m in self.telegram.sent("sendMessage")]

    async def transcript(self, kind: str) -> list[dict[str, Any]]:
        return [
            {**fields, "data": json.loads(fields["data"])}
            for _, fields in await self.redis.xrange("dm:transcripts")
            if fields["type"] == kind
        ]


@asynccontextmanager
async def running(
    brain: Brain,
    redis: aioredis.Redis,
    data_dir: Path,
    *,
    staff_channel: str = STAFF,
    clock: Callable[[], float] = time.time,
    **more_settings: Any,
) -> AsyncIterator[Running]:
    """Telegram and Slack channels, a brain worker and a sender on the durable flow; the
    desk's periodic check runs every 20 ms on `clock`."""
    fake_slack = FakeSlack()
    async with AsyncExitStack() as stack:
        telegram = await stack.enter_async_context(FakeTelegram())
        slack_port = await stack.enter_async_context(serve_web(fake_slack.app(), "127.0.0.1:0"))
        fake_slack.url = f"http://127.0.0.1:{slack_port}"
        settings = Settings(
            data_dir=data_dir,
            telegram_token=Secret(telegram.token),
            telegram_api_url=telegram.url,
            slack_bot_token=Secret(fake_slack.token),
            slack_signing_secret=Secret(SECRET),
            slack_api_url=f"{fake_slack.url}/api",
            slack_staff_channel=staff_channel,
            **more_settings,
        )
        flow = Flow(redis, RedisKeys(settings.redis_prefix), name="test", block_seconds=0.1)
        channels = build_channels(settings, flow.intake.handler, brain.feedback, redis)
        desks = [channel for channel in channels if isinstance(channel, StaffDesk)]
        for desk in desks:
            desk.clock, desk.check_seconds = clock, CHECK_EVERY
        for channel in channels:
            await stack.enter_async_context(channel)
        routes = [route for channel in channels for route in channel.web_routes()]
        port = await stack.enter_async_context(serve_web(make_web_app(routes), "127.0.0.1:0"))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        await stack.enter_async_context(
            flow.running(
                brain.handle,
                {channel.channel: channel for channel in channels},
                staff_channel=STAFF_CHANNEL if handoffs_posted(settings) else None,
            )
        )
        yield Running(
            telegram,
            fake_slack,
            f"http://127.0.0.1:{port}/slack/events",
            session,
            redis,
            settings,
            flow.intake.handler,
            desks[0] if desks else None,
        )


async def test_telegram_customer_is_handed_to_an_agent_and_back(
    brain: Brain, redis: aioredis.Redis, data_dir: Path
) -> None:
    async with running(brain, redis, data_dir) as run:
        # The customer asks for a person: told so, and the team gets an escalation.
        run.telegram.push(text_message("can I talk to a person? <!channel> & co"))
        [told] = await run.telegram.wait_for_messages(1)
        assert "passing you to a member of our support team" in visible_text(told["text"])
        await run.slack.wait_for(lambda: bool(run.escalations()))
        [escalation] = run.escalations()
        shown = json.dumps(escalation["blocks"])
        assert "asked for a person" in shown and "telegram" in shown and "`42`" in shown
        assert "can I talk to a person? &lt;!channel&gt; &amp; co" in shown  # escaped mrkdwn
        assert "<!channel>" not in shown
        claim, transfer, button = next(b for b in escalation["blocks"] if b["type"] == "actions")[
            "elements"
        ]
        assert claim["action_id"] == CLAIM_ACTION and claim["text"]["text"] == "I'll take it"
        assert transfer["type"] == "users_select"
        assert button["action_id"] == RESOLVE_ACTION and button["text"]["text"] == "Resolve"
        # The desk records the thread once Slack has answered the post: wait for it.
        for _ in range(500):
            state = await brain.store.handoff("telegram", "42")
            if state is not None and "staff_ts" in state:
                break
            await asyncio.sleep(0.01)
        assert state is not None and state.get("staff_ts") == escalation["ts"]
        assert await redis.get(f"dm:handoff:thread:{escalation['ts']}") == '["telegram", "42"]'

        # Their next message goes to the thread; the bot says nothing.
        run.telegram.push(text_message("my order 123 never arrived"))
        await run.slack.wait_for(lambda: bool(run.in_thread(escalation["ts"])))
        assert run.in_thread(escalation["ts"]) == ["*Customer:* my order 123 never arrived"]

        # Bots in the thread and threads that are no escalation are ignored.
        await run.event(
            {
                "type": "message",
                "subtype": "bot_message",
                "bot_id": "BOTHER",
                "channel": STAFF,
                "text": "a reminder bot",
                "ts": slack_ts(),
                "thread_ts": escalation["ts"],
            }
        )
        await run.event(
            {
                "type": "message",
                "channel": STAFF,
                "user": AGENT,
                "text": "chatting in some other thread",
                "ts": slack_ts(),
                "thread_ts": "1600000000.000001",
            }
        )
        # The agent answers in the thread: it reaches the customer and the transcripts.
        await run.event(
            {
                "type": "message",
                "channel": STAFF,
                "user": AGENT,
                "text": "Sorry about that! A new parcel is on its way &amp; shipping is refunded.",
                "ts": slack_ts(),
                "thread_ts": escalation["ts"],
            }
        )
        await run.telegram.wait_for_messages(2)
        assert run.customer_texts()[1] == (
            "Sorry about that! A new parcel is on its way & shipping is refunded."
        )
        agent_turns = [
            e for e in await run.transcript("turn") if e["data"]["turn"]["role"] == "agent"
        ]
        assert [(e["channel"], e["conversation"], e["user"]) for e in agent_turns] == [
            ("telegram", "42", AGENT)
        ]
        assert agent_turns[0]["data"]["turn"]["user_id"] == AGENT

        # Resolve: the customer is back with the bot, the escalation says who resolved it.
        await run.press_resolve(escalation)
        await run.telegram.wait_for_messages(3)
        assert "back with me" in run.customer_texts()[2]
        await run.slack.wait_for(lambda: bool(run.slack.payloads("chat.update")))
        [update] = run.slack.payloads("chat.update")
        assert (update["channel"], update["ts"]) == (STAFF, escalation["ts"])
        assert not [b for b in update["blocks"] if b["type"] == "actions"]
        assert f"Resolved by <@{AGENT}>" in json.dumps(update["blocks"])
        assert [e["data"] for e in await run.transcript("resolved")] == [{"agent": AGENT}]
        assert await brain.store.handoff("telegram", "42") is None
        assert await redis.get(f"dm:handoff:thread:{escalation['ts']}") is None

        # The next question is the bot's again.
        run.telegram.push(text_message("how long do I have to return an item?"))
        await run.telegram.wait_for_messages(4)
        assert "30 days" in run.customer_texts()[3]
        await asyncio.sleep(0.3)  # anything sent twice, or wrongly, would be here by now
        assert len(run.customer_texts()) == 4
        assert len(run.posts(STAFF)) == 2  # the escalation and the customer's one message

    # Export and training read the agent's answer as an agent answer to the question.
    [conversation] = await export_transcripts(redis, "dm:")
    roles = [(m.role, m.user) for m in conversation.messages]
    assert ("agent", AGENT) in roles
    pairs, _ = pick_pairs([conversation])
    [agent_pair] = [pair for pair in pairs if pair.kind == "agent"]
    assert agent_pair.question == "my order 123 never arrived"
    assert agent_pair.answer.startswith("Sorry about that!")


async def test_slack_dm_customer_and_resolve_typed_in_the_thread(
    brain: Brain, redis: aioredis.Redis, data_dir: Path
) -> None:
    async with running(brain, redis, data_dir) as run:
        await run.event(
            {
                "type": "message",
                "channel_type": "im",
                "channel": "D7",
                "user": "U7",
                "text": "can I talk to a human please",
                "ts": slack_ts(),
            }
        )
        await run.slack.wait_for(lambda: bool(run.escalations()))
        [escalation] = run.escalations()
        assert "<@U7>" in json.dumps(escalation["blocks"])  # a Slack customer, by mention
        # Staff-channel messages are never answered as questions, mentioned or not.
        ts = slack_ts()
        for kind in ("app_mention", "message"):
            await run.event(
                {
                    "type": kind,
                    "channel": STAFF,
                    "user": AGENT,
                    "text": "<@UBOT> how do I reset my password?",
                    "ts": ts,
                }
            )

        await run.event(
            {
                "type": "message",
                "channel": STAFF,
                "user": AGENT,
                "text": "Hi, I'm looking at your account now.",
                "ts": slack_ts(),
                "thread_ts": escalation["ts"],
            }
        )
        await run.slack.wait_for(lambda: len(run.posts("D7")) >= 2)
        assert run.posts("D7")[1]["text"] == "Hi, I'm looking at your account now."
        await run.event(
            {
                "type": "message",
                "channel": STAFF,
                "user": AGENT,
                "text": "resolve",
                "ts": slack_ts(),
                "thread_ts": escalation["ts"],
            }
        )
        await run.slack.wait_for(lambda: len(run.posts("D7")) >= 3)
        assert "back with me" in run.posts("D7")[2]["text"]
        await run.slack.wait_for(
            lambda: any(p["channel"] == STAFF for p in run.slack.payloads("chat.update"))
        )
        assert await brain.store.handoff("slack", "D7") is None
        await asyncio.sleep(0.3)
        # Only the escalation was posted in the staff channel: no placeholder, no answer.
        assert [p.get("thread_ts") for p in run.posts(STAFF)] == [None]
        assert not [e for e in await run.transcript("turn") if e["conversation"] == STAFF]


async def test_without_a_staff_channel_handoffs_stay_quiet_as_before(
    brain: Brain, redis: aioredis.Redis, data_dir: Path
) -> None:
    async with running(brain, redis, data_dir, staff_channel="") as run:
        run.telegram.push(text_message("/human"))
        await run.telegram.wait_for_messages(1)
        run.telegram.push(text_message("hello? anyone?"))
        deadline = time.monotonic() + 10
        while (await brain.store.history("telegram", "42"))[-1].text != "hello? anyone?":
            assert time.monotonic() < deadline, "the held message was not recorded"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert len(run.customer_texts()) == 1
        assert run.posts(STAFF) == []
        assert await redis.xlen("dm:outbox") == 0 and await redis.xlen("dm:inbox") == 0


def test_serve_says_where_handoffs_go_and_needs_the_bot_token() -> None:
    assert "DESKMATE_SLACK_STAFF_CHANNEL" in describe_handoffs(Settings())
    posted = Settings(slack_bot_token=Secret("xoxb-1"), slack_staff_channel="C9")
    assert describe_handoffs(posted) == "handoffs: posted to Slack channel C9"
    with pytest.raises(
        SettingsError, match=r"DESKMATE_SLACK_STAFF_CHANNEL.*DESKMATE_SLACK_BOT_TOKEN"
    ):
        Settings.load({"DESKMATE_SLACK_STAFF_CHANNEL": "C9"})


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"user": AGENT, "text": "hi", "ts": "2.0", "thread_ts": "1.0"}, True),
        ({"user": AGENT, "text": "top level", "ts": "2.0"}, False),
        ({"user": AGENT, "text": "hi", "ts": "1.0", "thread_ts": "1.0"}, False),  # the parent
        ({"bot_id": "B1", "text": "hi", "ts": "2.0", "thread_ts": "1.0"}, False),
        ({"subtype": "message_changed", "ts": "2.0", "thread_ts": "1.0"}, False),
        ({"subtype": "channel_join", "user": AGENT, "ts": "2.0", "thread_ts": "1.0"}, False),
        ({"user": AGENT, "text": "hi", "ts": "2.0", "thread_ts": "1.0", "channel": "C1"}, False),
    ],
)
def test_only_peoples_thread_replies_in_the_staff_channel_count(
    event: dict[str, Any], expected: bool
) -> None:
    message = {"type": "message", "channel": STAFF, **event}
    assert (to_thread_reply(message, STAFF) is not None) is expected


def test_resolve_words_and_the_escalation_shows_the_conversation_until_the_handoff() -> None:
    assert is_resolve("Resolved.") and is_resolve(" resolve ") and not is_resolve("resolve it")
    history = [
        Turn("user", "where is *my* parcel?"),
        Turn("assistant", "Passing you on.", action="handoff"),
        Turn("user", "hello?"),  # posted into the thread on its own
    ]
    state = {"channel": "telegram", "reason": "asked for a person", "user": "42"}
    text, blocks = render_escalation("42", state, history)
    assert text == "Handoff from telegram: asked for a person"
    shown = json.dumps(blocks)
    assert "*Customer*: where is *my* parcel?" in shown and "*Bot*: Passing you on." in shown
    assert "hello?" not in shown


async def test_agent_messages_after_the_handoff_ended_are_not_sent_and_reset_forgets_the_thread(
    brain: Brain, redis: aioredis.Redis
) -> None:
    customer = Inbound("telegram", "77", "77", "m1", "/human")
    assert (await brain.handle(customer)).action == "handoff"
    await brain.store.attach_staff_thread("telegram", "77", STAFF, "1700000000.000100")
    assert await brain.store.conversation_of_thread("1700000000.000100") == ("telegram", "77")
    assert await brain.handle(Inbound("telegram", "77", "77", "m2", "/reset"))
    assert await brain.store.conversation_of_thread("1700000000.000100") is None

    late = Inbound("telegram", "77", AGENT, "agent:1", "are you still there?", agent=True)
    assert await brain.handle(late) == Reply("", "none")
    assert staff_notice(late, Reply("", "none")) is None  # never echoed to the team
    assert not [t for t in await brain.store.history("telegram", "77") if t.role == "agent"]


async def press(run: Running, escalation: JSON, user: str, action: JSON) -> None:
    """A block_actions press on an escalation by `user` (sent as Slack sends it)."""
    body = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": user},
        "api_app_id": "A1",
        "channel": {"id": STAFF},
        "container": {"type": "message", "message_ts": escalation["ts"], "channel_id": STAFF},
        "message": {"type": "message", "ts": escalation["ts"], "blocks": escalation["blocks"]},
        "actions": [{"block_id": "deskmate_handoff", "action_ts": str(time.time()), **action}],
        "trigger_id": "1.2.3",
        "response_url": f"{run.slack.url}/response/1",
    }
    form = urlencode({"payload": json.dumps(body)})
    assert await run._post(form, "application/x-www-form-urlencoded") == 200


async def test_agents_claim_once_transfer_keep_notes_internal_and_the_customer_rates(
    brain: Brain, redis: aioredis.Redis, data_dir: Path
) -> None:
    async with running(brain, redis, data_dir) as run:
        run.telegram.push(text_message("/human"))
        [told] = await run.telegram.wait_for_messages(1)
        assert "number 1 in the queue" in visible_text(told["text"])
        [[back_button]] = told["reply_markup"]["inline_keyboard"]
        assert back_button["text"] == "Back to the bot"
        await run.slack.wait_for(lambda: bool(run.escalations()))
        [escalation] = run.escalations()
        for _ in range(500):  # the desk records the thread once Slack answered the post
            if (await brain.store.handoff_record("telegram", "42")).staff_ts:
                break
            await asyncio.sleep(0.01)

        # Two agents press "I'll take it" at once, and Slack retries one press.
        claim = {"type": "button", "action_id": CLAIM_ACTION, "value": "telegram:42"}
        await asyncio.gather(
            press(run, escalation, "UANNA", claim),
            press(run, escalation, "UBEN", claim),
            press(run, escalation, "UANNA", claim),
        )
        record = await brain.store.handoff_record("telegram", "42")
        assert record.state == "claimed" and record.agent in ("UANNA", "UBEN")
        holder = record.agent
        await run.slack.wait_for(lambda: bool(run.slack.payloads("chat.update")))
        shown = json.dumps(run.slack.payloads("chat.update")[-1]["blocks"])
        assert f"Claimed by <@{holder}>" in shown
        claims = [
            e["data"]
            for e in await run.transcript("handoff_state")
            if e["data"]["event"] == "claim"
        ]
        assert len(claims) == 1 and claims[0]["time_to_claim"] >= 0

        # The queue lists it with its age and who has it.
        listed = await StaffCommands(
            brain.retriever, redis, prefix="dm:", index_dir=data_dir, backend_version="quote"
        ).run("queue")
        assert "telegram:42" in listed and f"claimed by {holder}" in listed

        # A note stays in the thread; a transfer hands it to a colleague.
        for text in ("note: customer is a VIP, be nice", "Hello! I'm on it."):
            await run.event(
                {
                    "type": "message",
                    "channel": STAFF,
                    "user": holder,
                    "text": text,
                    "ts": slack_ts(),
                    "thread_ts": escalation["ts"],
                }
            )
        await run.telegram.wait_for_messages(2)
        transfer = {"type": "users_select", "action_id": TRANSFER_ACTION, "selected_user": "UCHLOE"}
        await press(run, escalation, holder, transfer)
        assert (await brain.store.handoff_record("telegram", "42")).agent == "UCHLOE"

        # Resolved: back with the bot, asked once to rate; one tap records CSAT.
        await run.press_resolve(escalation, user="UCHLOE")
        messages = await run.telegram.wait_for_messages(3)
        assert "back with me" in visible_text(messages[2]["text"])
        [[up, _down]] = messages[2]["reply_markup"]["inline_keyboard"]
        run.telegram.push(button_press(run.telegram.delivered[2], up["callback_data"]))
        messages = await run.telegram.wait_for_messages(4)
        assert "Thank you for rating" in visible_text(messages[3]["text"])
        await asyncio.sleep(0.3)
        texts = run.customer_texts()
        assert len(texts) == 4 and not any("VIP" in t for t in texts)
        states = [e["data"] for e in await run.transcript("handoff_state")]
        assert [s["to"] for s in states] == [
            "requested",
            "queued",
            "claimed",
            "claimed",
            "resolved",
            "bot",
        ]
        assert states[-1]["csat"] == "up"
        saved = await brain.store.handoffs.record(states[-1]["id"])
        assert saved["csat"] == "up" and saved["outcome"] == "resolved"
        assert saved["first_agent"] == holder and saved["resolved_by"] == "UCHLOE"


async def test_the_customer_cancels_with_bot_and_the_escalation_is_gone(
    brain: Brain, redis: aioredis.Redis
) -> None:
    assert (await brain.handle(Inbound("telegram", "5", "5", "m1", "/human"))).action == "handoff"
    assert await redis.zrange("dm:handoffs:waiting", 0, -1) == ["telegram:5"]
    cancelled = await brain.handle(Inbound("telegram", "5", "5", "m2", "/bot"))
    assert "cancelled your request" in cancelled.text
    assert await brain.store.handoff("telegram", "5") is None
    assert await redis.zrange("dm:handoffs:open", 0, -1) == []
    again = await brain.handle(Inbound("telegram", "5", "5", "m3", "/bot"))
    assert "already" in again.text


# -- the periodic check: reminders, idle hand-back, opening hours, stuck requests ------


class Clock:
    """The desk's clock, moved on by the test instead of waiting for real minutes."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


async def posted_escalation(run: Running, brain: Brain, conversation_id: str = "42") -> JSON:
    """The escalation of the conversation, once the desk has recorded its thread."""
    await run.slack.wait_for(lambda: bool(run.escalations()))
    [escalation] = run.escalations()
    for _ in range(500):
        if (await brain.store.handoff_record("telegram", conversation_id)).staff_ts:
            return escalation
        await asyncio.sleep(0.01)
    raise AssertionError("the escalation's thread was not recorded")


def reminders(run: Running) -> list[JSON]:
    return [p for p in run.posts(STAFF) if p.get("reply_broadcast")]


async def state_becomes(brain: Brain, conversation_id: str, state: str) -> None:
    for _ in range(500):
        if (await brain.store.handoff_record("telegram", conversation_id)).state == state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the handoff never became {state}")


async def test_the_check_reminds_the_oncall_group_once_and_hands_an_idle_one_back_once(
    retriever: Retriever, store: ConversationStore, redis: aioredis.Redis, data_dir: Path
) -> None:
    brain = Brain(retriever, store, QuoteBackend(), idle_seconds=3600.0)
    clock = Clock()
    async with running(
        brain,
        redis,
        data_dir,
        clock=clock,
        handoff_oncall_group="SONCALL",
        handoff_oncall_seconds=600.0,
        handoff_idle_seconds=3600.0,
    ) as run:
        assert run.desk is not None
        # A second process's desk on the same Redis and Slack, checking at the same times.
        other = StaffDesk(run.settings, run.desk.client, redis, run.on_message, clock=clock)
        other.bot_user_id = run.desk.bot_user_id
        run.telegram.push(text_message("/human"))
        await run.telegram.wait_for_messages(1)
        escalation = await posted_escalation(run, brain)
        await asyncio.sleep(10 * CHECK_EVERY)
        assert reminders(run) == []  # not unclaimed for long yet

        # Ten minutes later: one reminder, in the thread and broadcast, naming the group.
        clock.advance(601)
        await asyncio.gather(other.check(), other.check(), run.desk.check())
        await run.slack.wait_for(lambda: bool(reminders(run)))
        await asyncio.sleep(10 * CHECK_EVERY)
        [reminder] = reminders(run)
        assert reminder["thread_ts"] == escalation["ts"]
        assert reminder["text"].startswith("<!subteam^SONCALL> this handoff has waited 10 min")
        assert (await brain.store.handoff_record("telegram", "42")).reposted == 1

        # An agent answers (and so claims it); then nobody writes for almost an hour.
        await run.event(
            {
                "type": "message",
                "channel": STAFF,
                "user": AGENT,
                "text": "I'm looking into it.",
                "ts": slack_ts(),
                "thread_ts": escalation["ts"],
            }
        )
        await run.telegram.wait_for_messages(2)
        assert (await brain.store.handoff_record("telegram", "42")).state == "claimed"
        clock.advance(2900)  # 601 + 2900 s after the claim: not idle yet
        await other.check()
        await asyncio.sleep(10 * CHECK_EVERY)
        assert len(run.customer_texts()) == 2

        # Past the idle time: back to the bot, the customer told once, after the agent.
        clock.advance(200)
        await asyncio.gather(other.check(), run.desk.check(), other.check())
        await run.telegram.wait_for_messages(3)
        await state_becomes(brain, "42", "bot")
        await asyncio.sleep(10 * CHECK_EVERY)
        texts = run.customer_texts()
        assert texts[1] == "I'm looking into it."
        assert texts[2].startswith("Nobody from the team has written here for a while")
        assert len(texts) == 3
        events = [e["data"] for e in await run.transcript("handoff_state")]
        assert [e["event"] for e in events] == ["request", "route", "remind", "claim", "timeout"]
        assert (await brain.store.handoffs.record(events[-1]["id"]))["outcome"] == "timeout"
        assert await redis.zrange("dm:handoffs:open", 0, -1) == []
        assert await redis.get(f"dm:handoff:thread:{escalation['ts']}") is None

        # The bot answers again.
        run.telegram.push(text_message("how long do I have to return an item?"))
        await run.telegram.wait_for_messages(4)
        assert "30 days" in run.customer_texts()[3]


async def test_after_hours_handoffs_join_the_queue_when_the_team_starts(
    retriever: Retriever, store: ConversationStore, redis: aioredis.Redis, data_dir: Path
) -> None:
    # Open all of tomorrow (UTC) only: closed now, open from the coming midnight.
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    hours_text = f"{midnight.strftime('%a')} 00:00-24:00 UTC"
    brain = Brain(retriever, store, QuoteBackend(), hours=BusinessHours.parse(hours_text))
    clock = Clock()
    async with running(
        brain,
        redis,
        data_dir,
        clock=clock,
        business_hours=hours_text,
        handoff_oncall_seconds=600.0,
    ) as run:
        run.telegram.push(text_message("/human"))
        [told] = await run.telegram.wait_for_messages(1)
        assert "back tomorrow at 00:00 (UTC time)" in visible_text(told["text"])
        escalation = await posted_escalation(run, brain)
        assert "after hours" in json.dumps(escalation["blocks"])
        await asyncio.sleep(10 * CHECK_EVERY)
        assert (await brain.store.handoff_record("telegram", "42")).state == "after_hours"

        # The team's day begins: queued, and the escalation says it waits for someone.
        clock.advance((midnight - now).total_seconds() + 1)
        await state_becomes(brain, "42", "queued")
        await run.slack.wait_for(lambda: bool(run.slack.payloads("chat.update")))
        [update] = run.slack.payloads("chat.update")
        assert update["ts"] == escalation["ts"]
        assert "waiting for someone to take it" in json.dumps(update["blocks"])
        # The wait the on-call reminder measures starts with the hours, not the request.
        await asyncio.sleep(10 * CHECK_EVERY)
        assert reminders(run) == []
        clock.advance(601)
        await run.slack.wait_for(lambda: bool(reminders(run)))
        assert "waited 10 min" in reminders(run)[0]["text"]
        events = [e["data"]["event"] for e in await run.transcript("handoff_state")]
        assert events == ["request", "route", "open", "remind"]


async def test_a_handoff_left_requested_by_a_dead_worker_is_routed_once(
    brain: Brain, redis: aioredis.Redis, data_dir: Path
) -> None:
    clock = Clock()
    async with running(brain, redis, data_dir, clock=clock) as run:
        # What a worker that died between the two steps of a handoff leaves behind.
        change = Change(Event.REQUEST, reason="asked for a person", user="99")
        await brain.store.handoffs.apply("telegram", "99", change)
        await asyncio.sleep(10 * CHECK_EVERY)  # a worker may still be on its way: left alone
        assert (await brain.store.handoff_record("telegram", "99")).state == "requested"

        clock.advance(STUCK_REQUEST_SECONDS)
        await state_becomes(brain, "99", "queued")
        await asyncio.sleep(10 * CHECK_EVERY)
        assert await redis.zrange("dm:handoffs:waiting", 0, -1) == ["telegram:99"]
        events = [e["data"]["event"] for e in await run.transcript("handoff_state")]
        assert events == ["request", "route"]
        listed = await StaffCommands(
            brain.retriever, redis, prefix="dm:", index_dir=data_dir, backend_version="quote"
        ).run("queue")
        assert "telegram:99" in listed and "#1 queued" in listed


# -- Slack customers: cancel and rate without slash commands ---------------------------


def offered(run: Running, channel: str) -> JSON:
    """The latest message in `channel` offering quick-reply buttons, with its ts."""
    found: list[JSON] = []
    for payload, response in zip(
        run.slack.payloads("chat.postMessage"), run.slack.responses("chat.postMessage"), strict=True
    ):
        if payload["channel"] == channel:
            found.append({**payload, "ts": response["ts"]})
    found += [p for p in run.slack.payloads("chat.update") if p["channel"] == channel]
    with_buttons = [
        m for m in found if any(b.get("block_id") == QUICK_BLOCK for b in m.get("blocks") or [])
    ]
    return max(with_buttons, key=lambda m: float(m["ts"]))


async def press_quick(run: Running, message: JSON, label: str, user: str) -> None:
    """A Slack customer presses the quick-reply button `label` on `message`."""
    [block] = [b for b in message["blocks"] if b.get("block_id") == QUICK_BLOCK]
    [button] = [e for e in block["elements"] if e["text"]["text"] == label]
    body = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": user},
        "api_app_id": "A1",
        "channel": {"id": message["channel"]},
        "container": {"type": "message", "message_ts": message["ts"]},
        "message": {
            "type": "message",
            "ts": message["ts"],
            "text": message["text"],
            "blocks": message["blocks"],
        },
        "actions": [{**button, "block_id": QUICK_BLOCK, "action_ts": str(time.time())}],
        "trigger_id": "1.2.3",
        "response_url": f"{run.slack.url}/response/1",
    }
    form = urlencode({"payload": json.dumps(body)})
    assert await run._post(form, "application/x-www-form-urlencoded") == 200


async def test_slack_dm_customers_cancel_with_a_button_or_bot_typed_and_rate_with_a_button(
    brain: Brain, redis: aioredis.Redis, data_dir: Path
) -> None:
    async def dm(text: str) -> None:
        await run.event(
            {
                "type": "message",
                "channel_type": "im",
                "channel": "D7",
                "user": "U7",
                "text": text,
                "ts": slack_ts(),
            }
        )

    def texts() -> list[str]:
        """Every text deskmate showed in the DM, posted or put in place of a placeholder."""
        calls = run.slack.payloads("chat.postMessage") + run.slack.payloads("chat.update")
        return [p["text"] for p in calls if p["channel"] == "D7"]

    async def state_is(state: str) -> None:
        for _ in range(500):
            if (await brain.store.handoff_record("slack", "D7")).state == state:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never {state}")

    async with running(brain, redis, data_dir) as run:
        # Handed off: the notice offers "Back to the bot"; a press cancels.
        await dm("can I talk to a human please")
        await state_is("queued")
        await run.slack.wait_for(lambda: any("Type bot" in t for t in texts()))
        notice = offered(run, "D7")
        await press_quick(run, notice, "Back to the bot", "U7")
        await run.slack.wait_for(lambda: any("cancelled your request" in t for t in texts()))
        await state_is("bot")
        pressed = [p for p in run.slack.payloads("chat.update") if p["ts"] == notice["ts"]][-1]
        assert not [b for b in pressed["blocks"] if b.get("block_id") == QUICK_BLOCK]

        # `bot` typed alone does the same (`/bot` is a Slack slash command).
        await dm("human please")
        await state_is("queued")
        await dm("bot")
        await state_is("bot")
        await run.slack.wait_for(lambda: sum("cancelled your request" in t for t in texts()) == 2)

        # Resolved: 👍 / 👎 buttons; one press records the rating.
        await dm("talk to a person")
        await state_is("queued")
        # The escalation of this handoff (an earlier one cancelled before it was posted
        # may never have been, so they are not counted).
        staff_ts = None
        for _ in range(1000):
            staff_ts = (await brain.store.handoff_record("slack", "D7")).staff_ts
            if staff_ts:
                break
            await asyncio.sleep(0.01)
        escalation = next(e for e in run.escalations() if e["ts"] == staff_ts)
        await run.press_resolve(escalation)
        await run.slack.wait_for(lambda: any("How did our team do?" in t for t in texts()))
        await press_quick(run, offered(run, "D7"), "👍", "U7")
        await run.slack.wait_for(lambda: any("Thank you for rating" in t for t in texts()))
        states = [e["data"] for e in await run.transcript("handoff_state")]
        assert [s["event"] for s in states][-2:] == ["resolve", "rate"]
        assert states[-1]["csat"] == "up"
        assert (await brain.store.handoffs.record(states[-1]["id"]))["csat"] == "up"
