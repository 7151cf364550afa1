"""The Slack channel end to end: signed Events API requests in, real slack_sdk calls out to a
fake Slack, the real brain (sample FAQ, real embedder) and real Redis in between."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots.indexing import import_faq
from bots.slack.adapter import APOLOGY, REFUSAL, SlackAdapter, SlackStartError
from bots.slack.render import PLACEHOLDER
from bots.staff import StaffCommands
from bots.web import make_web_app, serve_web
from brain.answering.backends import QuoteBackend
from brain.channel import Handler
from brain.conversations import ConversationStore
from brain.flow.sender import Sender
from brain.flow.stream import Intake
from brain.flow.wiring import Flow
from brain.keys import RedisKeys
from brain.pipeline import Brain
from brain.redis_server import client
from brain.settings import Secret, Settings
from brain.types import Feedback, Inbound, Reply
from retrieval.embedder import Embedder
from retrieval.index import Thresholds
from retrieval.retriever import Retriever
from tests.fakes.slack import JSON, FakeSlack, signed_headers
from tests.senders import killed_after_delivery, queue_reply, taken_over

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
RETURNS = "how many days do I have to send an item back?"
TRACKING = "how do I track my parcel?"
KEYS = RedisKeys("dm:")
BLOCK_SECONDS = 0.1  # how long idle consumers wait for work: stopping takes no longer
_ids = itertools.count(1)


@dataclass(frozen=True)
class Response:
    status: int
    body: str


@dataclass
class Slack:
    """A running Slack channel and the means to talk to it as Slack would."""

    fake: FakeSlack
    adapter: SlackAdapter
    endpoint: str
    session: aiohttp.ClientSession

    async def post(
        self,
        body: str,
        content_type: str,
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        sent = {
            **signed_headers(body, secret, content_type, timestamp=timestamp),
            **(headers or {}),
        }
        async with self.session.post(self.endpoint, data=body.encode(), headers=sent) as response:
            return Response(response.status, await response.text())

    async def event(self, event: JSON, event_id: str | None = None, **kwargs: Any) -> Response:
        envelope = {
            "token": "legacy",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(_ids):08d}",
            "event_time": int(time.time()),
            "event": event,
        }
        return await self.post(json.dumps(envelope), "application/json", **kwargs)

    async def form(self, fields: dict[str, str], **kwargs: Any) -> Response:
        return await self.post(urlencode(fields), "application/x-www-form-urlencoded", **kwargs)

    def updates(self, channel: str) -> list[JSON]:
        return [p for p in self.fake.payloads("chat.update") if p["channel"] == channel]

    def posts(self, channel: str) -> list[JSON]:
        return [p for p in self.fake.payloads("chat.postMessage") if p["channel"] == channel]

    async def answers(self, channel: str, count: int) -> list[JSON]:
        """Wait until `count` placeholders in `channel` were replaced; return the updates."""
        await self.fake.wait_for(lambda: len(self.updates(channel)) >= count)
        return self.updates(channel)


def dm(text: str, user: str = "U1", channel: str = "D1", **extra: Any) -> JSON:
    ts = f"{1700000000 + next(_ids)}.000200"
    return {
        "type": "message",
        "channel_type": "im",
        "channel": channel,
        "user": user,
        "text": text,
        "ts": ts,
        **extra,
    }


def mention(text: str, channel: str = "C1", thread_ts: str | None = None) -> JSON:
    ts = f"{1700000000 + next(_ids)}.000300"
    event = {
        "type": "app_mention",
        "channel": channel,
        "user": "U2",
        "text": f"<@UBOT> {text}",
        "ts": ts,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def block_action(message: JSON, channel: str, action_id: str, block_id: str, value: str) -> JSON:
    """A block_actions payload: `U1` pressed a button of `message` (as deskmate posted it)."""
    return {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": "U1"},
        "api_app_id": "A1",
        "channel": {"id": channel},
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel},
        "message": {
            "type": "message",
            "ts": message["ts"],
            "text": message["text"],
            "blocks": message["blocks"],
            "bot_id": "BBOT",
        },
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": block_id,
                "value": value,
                "action_ts": str(time.time()),
            }
        ],
        "trigger_id": "1.2.3",
        "response_url": "https://hooks.slack.example/actions/T1/1/x",  # deskmate does not use it
    }


def section_text(payload: JSON) -> str:
    return "\n".join(b["text"]["text"] for b in payload["blocks"] if b["type"] == "section")


@asynccontextmanager
async def slack_on_flow(
    fake: FakeSlack,
    settings: Settings,
    brain: Brain,
    redis: aioredis.Redis,
    *,
    staff: StaffCommands | None = None,
    wrap: Callable[[Handler], Handler] = lambda handler: handler,
) -> AsyncIterator[Slack]:
    """The Slack channel on the durable flow (intake, a brain worker, a sender), as
    `deskmate serve` runs it; `wrap` may wrap the handler adapters hand messages to."""
    flow = Flow(redis, KEYS, name="test", block_seconds=BLOCK_SECONDS)
    adapter = SlackAdapter(
        settings, wrap(flow.intake.handler), brain.feedback, redis=redis, staff=staff
    )
    async with (
        adapter,
        serve_web(make_web_app(adapter.web_routes()), "127.0.0.1:0") as port,
        aiohttp.ClientSession() as session,
        flow.running(brain.handle, {adapter.channel: adapter}),
    ):
        yield Slack(fake, adapter, f"http://127.0.0.1:{port}/slack/events", session)


SlackFactory = Callable[..., AbstractAsyncContextManager[Slack]]


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    async with serve_web(fake.app(), "127.0.0.1:0") as port:
        fake.url = f"http://127.0.0.1:{port}"
        yield fake


@pytest.fixture
def settings(fake_slack: FakeSlack, data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        slack_bot_token=Secret(fake_slack.token),
        slack_signing_secret=Secret(SECRET),
        slack_api_url=f"{fake_slack.url}/api",
        slack_staff_users=("USTAFF",),
    )


@pytest.fixture
def make_slack(
    fake_slack: FakeSlack,
    settings: Settings,
    brain: Brain,
    redis: aioredis.Redis,
) -> SlackFactory:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Slack]:
        configured = replace(settings, **overrides)
        staff = StaffCommands(
            brain.retriever,
            redis,
            prefix=configured.redis_prefix,
            index_dir=configured.index_dir,
            backend_version=brain.backend.version,
        )
        async with slack_on_flow(fake_slack, configured, brain, redis, staff=staff) as running:
            yield running

    return start


@pytest.fixture
async def slack(make_slack: SlackFactory) -> AsyncIterator[Slack]:
    async with make_slack() as running:
        yield running


async def test_direct_messages_over_several_turns(slack: Slack, store: ConversationStore) -> None:
    response = await slack.event(dm(RETURNS))
    assert response.status == 200
    [first] = await slack.answers("D1", 1)
    [placeholder] = slack.posts("D1")
    assert placeholder["text"] == PLACEHOLDER and "thread_ts" not in placeholder
    assert first["ts"] == slack.fake.responses("chat.postMessage")[0]["ts"]
    assert "30 days" in section_text(first)
    links = [b for b in first["blocks"] if b["type"] == "context"]
    assert "<https://help.northwind-outfitters.example/" in links[0]["elements"][0]["text"]
    buttons = next(b for b in first["blocks"] if b["type"] == "actions")["elements"]
    assert [b["value"] for b in buttons] == ["up", "down"]

    await slack.event(dm(TRACKING))
    second = (await slack.answers("D1", 2))[1]
    assert "track" in section_text(second).lower()
    history = await store.history("slack", "D1")
    assert [turn.role for turn in history] == ["user", "assistant", "user", "assistant"]
    assert history[2].text == TRACKING


async def test_mention_is_answered_in_thread_and_follow_ups_keep_context(
    slack: Slack, store: ConversationStore
) -> None:
    question = mention(TRACKING)
    await slack.event(question)
    [answer] = await slack.answers("C1", 1)
    [placeholder] = slack.posts("C1")
    assert placeholder["thread_ts"] == question["ts"]
    assert answer["channel"] == "C1"
    assert "track" in section_text(answer).lower()
    assert "<@UBOT>" not in (await store.history("slack", f"C1:{question['ts']}"))[0].text

    await slack.event(mention(RETURNS, thread_ts=question["ts"]))
    await slack.answers("C1", 2)
    assert [p["thread_ts"] for p in slack.posts("C1")] == [question["ts"], question["ts"]]
    history = await store.history("slack", f"C1:{question['ts']}")
    assert [turn.text for turn in history if turn.role == "user"] == [TRACKING, RETURNS]


async def test_a_retried_event_is_answered_once(slack: Slack, redis: aioredis.Redis) -> None:
    event = dm(RETURNS)
    await slack.event(event, event_id="EvRETRY")
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert (await slack.event(event, event_id="EvRETRY", headers=retry)).status == 200
    await slack.event(dm(TRACKING, channel="D2"))  # a later message: once answered, all are
    await slack.answers("D2", 1)
    await slack.answers("D1", 1)
    assert len(slack.posts("D1")) == 1 and len(slack.updates("D1")) == 1
    assert await redis.ttl("dm:seen:slack:EvRETRY") > 23 * 3600


async def test_bad_or_stale_signature_is_refused_and_nothing_is_processed(
    slack: Slack, redis: aioredis.Redis
) -> None:
    forged = await slack.event(dm(RETURNS), event_id="EvFORGED", secret="not-the-secret")
    stale = await slack.event(dm(RETURNS), event_id="EvSTALE", timestamp=int(time.time()) - 10 * 60)
    assert (forged.status, stale.status) == (401, 401)
    await slack.event(dm(TRACKING, channel="D2"))
    await slack.answers("D2", 1)
    assert slack.posts("D1") == []
    assert await redis.exists("dm:seen:slack:EvFORGED", "dm:seen:slack:EvSTALE") == 0


async def test_rate_limited_reply_waits_retry_after_and_still_arrives(slack: Slack) -> None:
    slack.fake.fail_next("chat.update", retry_after=1)
    await slack.event(dm(RETURNS))
    [answer] = await slack.answers("D1", 1)
    assert "30 days" in section_text(answer)
    updates = [call for call in slack.fake.calls if call.method == "chat.update"]
    assert [call.status for call in updates] == [429, 200]
    assert updates[1].time - updates[0].time >= 1.0


async def test_thumbs_up_is_recorded_in_transcripts(slack: Slack, redis: aioredis.Redis) -> None:
    await slack.event(dm(RETURNS))
    [answer] = await slack.answers("D1", 1)
    press = block_action(answer, "D1", "deskmate_feedback_up", "deskmate_feedback", "up")
    response = await slack.form({"payload": json.dumps(press)})
    assert response.status == 200
    await slack.fake.wait_for(lambda: len(slack.updates("D1")) == 2)
    thanked = slack.updates("D1")[1]
    assert thanked["ts"] == answer["ts"]
    assert not [b for b in thanked["blocks"] if b["type"] == "actions"]
    assert "Thanks for the feedback" in json.dumps(thanked["blocks"])
    events = [e for _, e in await redis.xrange("dm:transcripts") if e["type"] == "feedback"]
    assert [(e["channel"], e["conversation"], e["user"]) for e in events] == [("slack", "D1", "U1")]
    assert json.loads(events[0]["data"]) == {"message_id": answer["ts"], "rating": "up"}


async def test_pressing_an_option_of_a_clarifying_question_picks_it(
    slack: Slack, brain: Brain, store: ConversationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    score = brain.retriever.search("issue with delivery")[0].score
    monkeypatch.setattr(brain, "_thresholds", Thresholds(answer=score + 0.01, clarify=score - 0.1))
    await slack.event(dm("issue with delivery"))
    [offer] = await slack.answers("D1", 1)
    [buttons] = [b for b in offer["blocks"] if b.get("block_id") == "deskmate_choices"]
    assert [e["action_id"] for e in buttons["elements"]] == [
        f"deskmate_pick_{n}" for n in (1, 2, 3)
    ]
    second_title = buttons["elements"][1]["text"]["text"].removeprefix("2. ")
    press = block_action(offer, "D1", "deskmate_pick_2", "deskmate_choices", "2")
    assert (await slack.form({"payload": json.dumps(press)})).status == 200
    await slack.fake.wait_for(lambda: len(slack.updates("D1")) == 3)
    picked = next(u for u in slack.updates("D1")[1:] if u["ts"] == offer["ts"])
    assert "picked 2" in json.dumps(picked["blocks"])
    assert not [b for b in picked["blocks"] if b["type"] == "actions"]
    answer = next(u for u in slack.updates("D1")[1:] if u["ts"] != offer["ts"])
    assert second_title in json.dumps(answer["blocks"])
    history = await store.history("slack", "D1")
    assert [t.text for t in history if t.role == "user"] == ["issue with delivery", "2"]


def command(text: str, user: str, response_url: str) -> dict[str, str]:
    return {
        "token": "legacy",
        "team_id": "T1",
        "channel_id": "C9",
        "user_id": user,
        "command": "/deskmate",
        "text": text,
        "response_url": response_url,
        "trigger_id": "1.2.3",
        "api_app_id": "A1",
    }


async def test_staff_commands_are_run_for_staff(slack: Slack, redis: aioredis.Redis) -> None:
    await slack.event(dm(RETURNS))
    await slack.answers("D1", 1)
    response_url = f"{slack.fake.url}/response/1"
    response = await slack.form(command("stats", "USTAFF", response_url))
    assert response.status == 200
    await slack.fake.wait_for(lambda: len(slack.fake.payloads("response")) == 1)
    stats = slack.fake.payloads("response")[0]
    assert stats["response_type"] == "ephemeral"
    assert "messages        1 (slack 1)" in stats["text"]
    assert "answers         1" in stats["text"]

    await redis.set("dm:model:active", "support-lora-v3")
    await slack.form(command("model", "USTAFF", response_url))
    await slack.fake.wait_for(lambda: len(slack.fake.payloads("response")) == 2)
    assert "support-lora-v3" in slack.fake.payloads("response")[1]["text"]


async def test_staff_commands_are_refused_politely_to_others(
    make_slack: SlackFactory, fake_slack: FakeSlack
) -> None:
    fake_slack.group_members["S1"] = ["UGROUP"]
    async with make_slack(slack_staff_group="S1") as slack:
        response_url = f"{fake_slack.url}/response/2"
        async with slack.session.post(
            slack.endpoint, data=b"", headers={"Content-Type": "application/json"}
        ) as unsigned:
            assert unsigned.status == 401
        refused = await slack.form(command("stats", "UOTHER", response_url))
        assert refused.status == 200
        assert refused.body == REFUSAL  # shown to the user only (ephemeral)
        await slack.form(command("model", "UGROUP", response_url))
        await fake_slack.wait_for(lambda: len(fake_slack.payloads("response")) == 1)
        assert "Active model: quote" in fake_slack.payloads("response")[0]["text"]
        assert fake_slack.payloads("usergroups.users.list")[-1]["usergroup"] == "S1"


async def test_faq_reload_serves_the_edited_file(
    fake_slack: FakeSlack,
    settings: Settings,
    redis: aioredis.Redis,
    store: ConversationStore,
    embedder: Embedder,
    tmp_path: Path,
) -> None:
    faq = tmp_path / "faq.jsonl"
    entry = {
        "id": "wifi",
        "question": "What is the office wifi password?",
        "answer": "It is on the kitchen whiteboard.",
        "alternates": ["wifi password"],
    }
    faq.write_text(json.dumps(entry) + "\n")
    index, _ = import_faq(settings.index_dir, [faq], embedder, show_progress=False)
    retriever = Retriever(embedder, index)
    brain = Brain(retriever, store, QuoteBackend())
    staff = StaffCommands(
        retriever, redis, prefix="dm:", index_dir=settings.index_dir, backend_version="quote"
    )
    parking = {
        "id": "parking",
        "question": "Where can I park my car at the office?",
        "answer": "Level -2 of the garage, bays 10-40.",
        "alternates": ["car park"],
    }
    faq.write_text(json.dumps(entry) + "\n" + json.dumps(parking) + "\n")
    async with slack_on_flow(fake_slack, settings, brain, redis, staff=staff) as slack:
        await slack.form(command("faq reload", "USTAFF", f"{fake_slack.url}/response/3"))
        await fake_slack.wait_for(lambda: len(fake_slack.payloads("response")) == 1)
        assert "Reloaded 2 FAQ entries from faq.jsonl" in fake_slack.payloads("response")[0]["text"]
        assert retriever.index.entry("parking") is not None
        await slack.event(dm("where do I park my car at the office?"))
        [answer] = await slack.answers("D1", 1)
        assert "Level -2" in section_text(answer)


async def test_the_bots_own_and_other_bots_messages_are_ignored(
    slack: Slack, redis: aioredis.Redis
) -> None:
    await slack.event(dm("Here is my earlier answer", user="UBOT", bot_id="BBOT"), "EvSELF")
    await slack.event(dm("I am another bot", user="U7", bot_id="B7"), "EvOTHERBOT")
    await slack.event(dm(RETURNS, channel="D2"))
    await slack.answers("D2", 1)
    assert slack.posts("D1") == []
    assert await redis.exists("dm:seen:slack:EvSELF", "dm:seen:slack:EvOTHERBOT") == 0


async def test_a_rejected_bot_token_fails_at_start_naming_the_variable(
    settings: Settings, brain: Brain, redis: aioredis.Redis
) -> None:
    adapter = SlackAdapter(
        replace(settings, slack_bot_token=Secret("xoxb-wrong")),
        Intake(redis, KEYS).handler,
        brain.feedback,
        redis=redis,
    )
    with pytest.raises(SlackStartError, match="DESKMATE_SLACK_BOT_TOKEN"):
        async with adapter:
            pass


async def test_socket_mode_receives_acks_and_answers(
    make_slack: SlackFactory, fake_slack: FakeSlack
) -> None:
    async with make_slack(
        slack_app_token=Secret(fake_slack.app_token), slack_signing_secret=Secret("")
    ) as slack:
        assert slack.adapter.socket_mode and slack.adapter.web_routes() == []
        envelope = {
            "type": "event_callback",
            "team_id": "T1",
            "event_id": "EvSOCKET",
            "event": dm(RETURNS),
        }
        await fake_slack.push(envelope, "env-1")
        [answer] = await slack.answers("D1", 1)
        assert "30 days" in section_text(answer)
        assert {"envelope_id": "env-1"} in fake_slack.socket_acks


async def test_a_rejected_app_token_fails_at_start_naming_the_variable(
    make_slack: SlackFactory,
) -> None:
    with pytest.raises(SlackStartError, match="DESKMATE_SLACK_APP_TOKEN"):
        async with make_slack(slack_app_token=Secret("xapp-wrong")):
            pass


async def test_while_a_person_holds_the_conversation_the_placeholder_is_removed(
    slack: Slack, store: ConversationStore
) -> None:
    await store.start_handoff("slack", "D1", "asked for a person")
    await slack.event(dm("hello? anyone there?"))
    await slack.fake.wait_for(lambda: bool(slack.fake.payloads("chat.delete")))
    [placeholder] = slack.fake.responses("chat.postMessage")
    assert slack.fake.payloads("chat.delete") == [{"channel": "D1", "ts": placeholder["ts"]}]
    assert slack.updates("D1") == []
    assert (await store.history("slack", "D1"))[-1].text == "hello? anyone there?"


async def test_a_failure_answering_is_apologised_for_and_serving_goes_on(
    settings: Settings, fake_slack: FakeSlack, brain: Brain, redis: aioredis.Redis
) -> None:
    def flaky(queue: Handler) -> Handler:
        async def accept(inbound: Inbound) -> None:
            if "explode" in inbound.text:
                raise RuntimeError("backend fell over")
            await queue(inbound)

        return accept

    async with slack_on_flow(fake_slack, settings, brain, redis, wrap=flaky) as slack:
        await slack.event(dm("please explode"))
        [apology] = await slack.answers("D1", 1)
        assert apology["text"] == APOLOGY
        await slack.event(dm(RETURNS))
        assert "30 days" in section_text((await slack.answers("D1", 2))[1])


async def test_redis_down_makes_slack_redeliver(
    fake_slack: FakeSlack, settings: Settings, brain: Brain, tmp_path: Path
) -> None:
    """An event that cannot be made durable is refused with 503, so Slack sends it again."""
    dead = client(f"unix://{tmp_path / 'no-redis.sock'}", retries=0)
    # The flow's intake alone: with Redis down, nothing reaches a worker or a sender.
    adapter = SlackAdapter(settings, Intake(dead, KEYS).handler, brain.feedback, redis=dead)
    async with (
        adapter,
        serve_web(make_web_app(adapter.web_routes()), "127.0.0.1:0") as port,
        aiohttp.ClientSession() as session,
    ):
        slack = Slack(fake_slack, adapter, f"http://127.0.0.1:{port}/slack/events", session)
        response = await slack.event(dm("how do I reset my password?"))
    await dead.aclose()
    assert response.status == 503
    assert fake_slack.payloads("chat.postMessage") == []  # nothing acknowledged or posted


async def test_hostile_bodies_are_refused_and_a_cut_emoji_is_answered(
    slack: Slack, store: ConversationStore
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert (await slack.post(deep, "application/json", secret="forged")).status < 500
    assert (await slack.post(deep, "application/json")).status < 500
    raw = {**signed_headers("x", SECRET, "application/json")}
    async with slack.session.post(slack.endpoint, data=b"\xff\xfe{", headers=raw) as response:
        assert response.status < 500
    # A lone surrogate, as a client that cut "😀" in half sends it (JSON-escaped).
    assert (await slack.event(dm(f"{TRACKING} \ud83d"))).status == 200
    [answer] = await slack.answers("D1", 1)
    assert "track" in section_text(answer).lower()
    [question, _] = await store.history("slack", "D1")
    assert question.text == f"{TRACKING} \ufffd"


@pytest.mark.parametrize("placeholder", [True, False], ids=["placeholder", "posted anew"])
async def test_the_delivery_record_keeps_slacks_ts_and_nothing_is_sent_twice(
    settings: Settings,
    fake_slack: FakeSlack,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    placeholder: bool,
) -> None:
    """A sender killed after Slack took the reply leaves the message's ts in the delivery
    record (the placeholder it replaced, or the new post's); the sender that takes the
    entry over sends nothing."""
    thinking = "1700000999.000100"
    if placeholder:
        await redis.rpush(KEYS.slack_placeholder("D1"), thinking)
    adapter = SlackAdapter(settings, ignore, ignore_feedback, redis=redis)
    async with adapter:
        adapters = {adapter.channel: adapter}
        reply = Reply("Within 30 days.", "answer", in_reply_to="1")
        entry_id = await queue_reply(redis, KEYS, "slack", "D1", reply)
        record = await killed_after_delivery(redis, KEYS, adapters, monkeypatch)  # type: ignore[arg-type]
        if placeholder:
            assert [p["ts"] for p in fake_slack.payloads("chat.update")] == [thinking]
            assert record == {"attempts": "1", "delivered": thinking}
        else:
            [posted] = fake_slack.responses("chat.postMessage")
            assert record == {"attempts": "1", "delivered": posted["ts"]}
        heir = await taken_over(redis, KEYS, adapters)  # type: ignore[arg-type]
    delivered = fake_slack.payloads("chat.update") + fake_slack.payloads("chat.postMessage")
    assert len(delivered) == 1  # not again
    assert heir.redeliveries == 0
    assert await redis.exists(KEYS.delivery(entry_id)) == 0  # finished: the record goes


async def test_a_reply_cut_mid_flight_replaces_its_placeholder_again_and_shows_once(
    settings: Settings, fake_slack: FakeSlack, redis: aioredis.Redis
) -> None:
    """Slack has no idempotency key, but a reply that replaces its placeholder is an edit
    (chat.update of the placeholder's ts): the redelivery after a call cut mid-flight
    edits the same message again, and the customer sees the answer once."""
    thinking = "1700000999.000100"
    await redis.rpush(KEYS.slack_placeholder("D1"), thinking)
    adapter = SlackAdapter(settings, ignore, ignore_feedback, redis=redis)
    async with adapter:
        adapters = {adapter.channel: adapter}
        await queue_reply(redis, KEYS, "slack", "D1", Reply("Within 30 days.", "answer"))
        release = fake_slack.hold_next("chat.update")
        dying = Sender(redis, KEYS, adapters, "dying", reclaim_idle=0.2)  # type: ignore[arg-type]
        await dying._ensure_group()
        ((entry_id, fields),) = await dying._read(">", count=1)
        call = asyncio.create_task(dying._handle(entry_id, fields))
        await fake_slack.wait_for(lambda: bool(fake_slack.held))
        call.cancel()  # killed while the request was with Slack
        with contextlib.suppress(asyncio.CancelledError):
            await call
        await redis.delete(KEYS.lock(KEYS.outbox, "slack", "D1"))  # a dead process's expires
        release.set()  # Slack carried the cut call out after all
        heir = await taken_over(redis, KEYS, adapters)  # type: ignore[arg-type]
    assert heir.redeliveries == 1
    assert [p["ts"] for p in fake_slack.payloads("chat.update")] == [thinking, thinking]
    assert fake_slack.payloads("chat.postMessage") == []  # one message, edited twice
    assert await redis.exists(KEYS.delivery(entry_id)) == 0


async def ignore(inbound: Inbound) -> None:
    raise AssertionError(f"no message should arrive: {inbound}")


async def ignore_feedback(feedback: Feedback) -> None:
    raise AssertionError(f"no feedback should arrive: {feedback}")
