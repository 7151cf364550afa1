"""The Telegram channel end to end: the real python-telegram-bot client against a fake Bot
API server, the real brain on the sample FAQ, real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots.telegram.adapter import TelegramAdapter, TelegramStartError, check_settings
from bots.web import make_web_app, serve_web
from brain.answering.backends import Answer, QuoteBackend
from brain.conversations import ConversationStore
from brain.flow.stream import Intake
from brain.flow.wiring import Flow
from brain.keys import RedisKeys
from brain.pipeline import COMMANDS, Brain
from brain.redis_server import client
from brain.settings import Secret, Settings, SettingsError
from brain.types import Feedback, Inbound, Reply, Turn
from retrieval.index import FaqHit, Thresholds
from retrieval.retriever import Retriever
from tests.fakes.telegram import (
    CUSTOMER,
    GROUP,
    FakeTelegram,
    button_press,
    group_message,
    sticker_message,
    text_message,
    visible_text,
)
from tests.senders import killed_after_delivery, queue_reply, taken_over

WEBHOOK_URL = "https://bot.example.com/telegram/hook"
WEBHOOK_SECRET = "s3cret-Token_for-tests"
KEYS = RedisKeys("dm:")
BLOCK_SECONDS = 0.1  # how long idle consumers wait for work: stopping takes no longer


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def settings_for(fake: FakeTelegram, **overrides: Any) -> Settings:
    return Settings(telegram_token=Secret(fake.token), telegram_api_url=fake.url, **overrides)


@asynccontextmanager
async def telegram_bot(
    fake: FakeTelegram,
    brain: Brain,
    redis: aioredis.Redis,
    settings: Settings | None = None,
    **options: Any,
) -> AsyncIterator[TelegramAdapter]:
    """The channel on the durable flow (intake, a brain worker, a sender), as `deskmate
    serve` runs it."""
    flow = Flow(redis, KEYS, name="test", block_seconds=BLOCK_SECONDS)
    adapter = TelegramAdapter(
        settings or settings_for(fake), flow.intake.handler, brain.feedback, redis=redis, **options
    )
    async with adapter, flow.running(brain.handle, {adapter.channel: adapter}):
        yield adapter


class ScriptedBackend:
    """An answer backend that writes whatever the test needs, citing the best hit."""

    version = "scripted-1"

    def __init__(self, text: str, delay: float = 0.0) -> None:
        self.text = text
        self.delay = delay

    async def answer(
        self, question: str, hits: Sequence[FaqHit], history: Sequence[Turn]
    ) -> Answer:
        await asyncio.sleep(self.delay)
        return Answer(self.text, (hits[0],))


def clarifying_brain(retriever: Retriever, store: ConversationStore, question: str) -> Brain:
    """A brain whose thresholds put `question` in the clarify band (options offered)."""
    score = retriever.search(question)[0].score
    band = Thresholds(answer=score + 0.01, clarify=score - 0.1)
    return Brain(retriever, store, QuoteBackend(), thresholds=band)


async def transcript_events(redis: aioredis.Redis) -> list[dict[str, Any]]:
    return [
        {**fields, "data": json.loads(fields["data"])}
        for _, fields in await redis.xrange("dm:transcripts")
    ]


async def test_private_conversation_keeps_context_and_registers_commands(
    fake: FakeTelegram, retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    # Put the question inside the clarify band, so the bot offers entries and "2" picks one.
    brain = clarifying_brain(retriever, store, "issue with delivery")
    async with telegram_bot(fake, brain, redis):
        assert fake.sent("setMyCommands") == [
            {"commands": [{"command": n[1:], "description": d} for n, d in COMMANDS.items()]}
        ]
        fake.push(text_message("/start"))
        fake.push(text_message("issue with delivery"))
        first, offer = await fake.wait_for_messages(2)
        assert first["chat_id"] == CUSTOMER["id"] and "deskmate" in first["text"]
        assert offer["chat_id"] == CUSTOMER["id"] and offer["parse_mode"] == "HTML"
        assert "Did you mean" in offer["text"] and "\n2. " in offer["text"]
        # No rating buttons on a question back: one button per option instead.
        assert [row[0]["callback_data"] for row in offer["reply_markup"]["inline_keyboard"]] == [
            "pick:1",
            "pick:2",
            "pick:3",
        ]
        second_title = visible_text(offer["text"]).split("\n2. ")[1].split("\n")[0]

        fake.push(text_message("2"))
        *_, answer = await fake.wait_for_messages(3)
    assert answer["chat_id"] == CUSTOMER["id"] and answer["parse_mode"] == "HTML"
    assert answer["link_preview_options"] == {"is_disabled": True}
    shown = visible_text(answer["text"])
    assert f"[1] {second_title}" in shown  # the picked entry is the one cited
    assert '<a href="https://help.northwind-outfitters.example/' in answer["text"]
    assert answer["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "👍", "callback_data": "fb:up"}, {"text": "👎", "callback_data": "fb:down"}]
        ]
    }
    history = await store.history("telegram", str(CUSTOMER["id"]))
    assert [t.text for t in history if t.role == "user"] == ["/start", "issue with delivery", "2"]


async def test_pressing_an_option_of_a_clarifying_question_picks_it(
    fake: FakeTelegram, retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    brain = clarifying_brain(retriever, store, "issue with delivery")
    async with telegram_bot(fake, brain, redis):
        fake.push(text_message("issue with delivery"))
        [offer] = await fake.wait_for_messages(1)
        [_, second, _] = offer["reply_markup"]["inline_keyboard"]
        second_title = second[0]["text"].removeprefix("2. ")
        press = button_press(fake.delivered[0], "pick:2")
        fake.push(press)
        fake.push(press)  # Telegram redelivers: still one pick
        *_, answer = await fake.wait_for_messages(2)
        await fake.wait_for(lambda: fake.sent("editMessageReplyMarkup"))
        await asyncio.sleep(0.2)
    assert f"[1] {second_title}" in visible_text(answer["text"])
    assert len(fake.sent("sendMessage")) == 2
    [edit] = fake.sent("editMessageReplyMarkup")
    assert edit["message_id"] == fake.delivered[0]["message_id"] and not edit.get("reply_markup")
    history = await store.history("telegram", str(CUSTOMER["id"]))
    assert [t.text for t in history if t.role == "user"] == ["issue with delivery", "2"]


async def test_group_answers_only_when_mentioned_or_replied_to(
    fake: FakeTelegram, brain: Brain, store: ConversationStore, redis: aioredis.Redis
) -> None:
    async with telegram_bot(fake, brain, redis):
        fake.push(group_message("how do I track my parcel?"))  # talking among themselves
        fake.push(group_message("@northwind_help_bot how do I track my parcel?"))
        [reply] = await fake.wait_for_messages(1)
        bot_message = fake.delivered[0]
        fake.push(group_message("/help@some_other_bot"))
        fake.push(group_message("and how long do returns take?", reply_to_message=bot_message))
        replies = await fake.wait_for_messages(2)
        await asyncio.sleep(0.2)  # nothing else may come
    assert len(fake.sent("sendMessage")) == 2
    assert [r["chat_id"] for r in replies] == [GROUP["id"], GROUP["id"]]
    assert "track" in visible_text(reply["text"]).lower()
    assert "30 days" in visible_text(replies[1]["text"])
    history = await store.history("telegram", str(GROUP["id"]))
    user_texts = [t.text for t in history if t.role == "user"]
    # The mention is not part of the question; unaddressed messages are not recorded.
    assert user_texts == ["how do I track my parcel?", "and how long do returns take?"]


async def test_flood_limit_429_is_waited_out_and_the_reply_arrives(
    fake: FakeTelegram, brain: Brain, redis: aioredis.Redis
) -> None:
    fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", {"retry_after": 1})
    async with telegram_bot(fake, brain, redis):
        fake.push(text_message("how do I reset my password?"))
        await fake.wait_for_messages(1, timeout=15)
    attempts = [c for c in fake.calls if c.method == "sendMessage"]
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[0].payload == attempts[1].payload
    assert attempts[1].payload["chat_id"] == CUSTOMER["id"]
    assert attempts[1].time - attempts[0].time >= 1.0


async def test_long_answer_is_split_on_paragraphs_with_buttons_on_the_last_part(
    fake: FakeTelegram, retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    sentences = "All good things take time. " * 13
    paragraphs = [f"Paragraph {n}: {sentences}Done." for n in range(16)]
    text = "\n\n".join(paragraphs) + " [1]"
    assert 5900 < len(text) < 6500
    brain = Brain(retriever, store, ScriptedBackend(text))
    async with telegram_bot(fake, brain, redis):
        fake.push(text_message("how do I track my parcel?"))
        await fake.wait_for(
            lambda: fake.sent("sendMessage") and "reply_markup" in fake.sent("sendMessage")[-1]
        )
    parts = fake.sent("sendMessage")
    assert len(parts) == 2
    shown = [visible_text(p["text"]) for p in parts]
    assert all(len(s) <= 4096 for s in shown)
    assert shown[0].endswith("Done.") and shown[1].startswith("Paragraph ")
    body = shown[0] + "\n\n" + shown[1].split("\n\nSources:")[0]
    assert body == text
    assert "reply_markup" not in parts[0] and "reply_markup" in parts[1]
    assert [p["chat_id"] for p in parts] == [CUSTOMER["id"]] * 2


async def test_html_hostile_model_output_is_escaped(
    fake: FakeTelegram, retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    hostile = 'Use <b>bold & "quotes"</i> <script>alert(1)</script> if a < b && c > d [1]'
    brain = Brain(retriever, store, ScriptedBackend(hostile))
    async with telegram_bot(fake, brain, redis):
        fake.push(text_message("how do I track my parcel?"))
        [message] = await fake.wait_for_messages(1)
    # The fake parses HTML as Telegram does: it accepted the message and shows the text as is.
    assert visible_text(message["text"]).startswith(hostile)
    assert "&lt;script&gt;" in message["text"] and "<b>bold" not in message["text"]
    assert "a &lt; b &amp;&amp; c &gt; d" in message["text"]
    assert '<a href="https://help.northwind-outfitters.example/' in message["text"]


async def test_button_press_is_recorded_answered_and_the_buttons_removed(
    fake: FakeTelegram, brain: Brain, redis: aioredis.Redis
) -> None:
    async with telegram_bot(fake, brain, redis):
        fake.push(text_message("how do I reset my password?"))
        await fake.wait_for_messages(1)
        rated = fake.delivered[0]
        press = fake.push(button_press(rated, "fb:down"))
        await fake.wait_for(lambda: fake.sent("editMessageReplyMarkup"))
    assert fake.sent("answerCallbackQuery") == [
        {"callback_query_id": press["callback_query"]["id"], "text": "Thanks for the feedback!"}
    ]
    [edit] = fake.sent("editMessageReplyMarkup")
    assert edit["chat_id"] == CUSTOMER["id"] and edit["message_id"] == rated["message_id"]
    assert not edit.get("reply_markup")
    feedback = [e for e in await transcript_events(redis) if e["type"] == "feedback"]
    assert len(feedback) == 1
    assert feedback[0]["channel"] == "telegram"
    assert feedback[0]["conversation"] == str(CUSTOMER["id"])
    assert feedback[0]["user"] == str(CUSTOMER["id"])
    assert feedback[0]["data"] == {"message_id": str(rated["message_id"]), "rating": "down"}


async def test_sticker_gets_a_polite_text_only_reply_and_is_recorded(
    fake: FakeTelegram, brain: Brain, redis: aioredis.Redis
) -> None:
    async with telegram_bot(fake, brain, redis):
        fake.push(sticker_message())
        fake.push(text_message("how do I reset my password?"))  # and the bot carries on
        first, second = await fake.wait_for_messages(2)
    assert first["chat_id"] == CUSTOMER["id"]
    assert "only read text" in first["text"] and "sticker" in first["text"]
    assert "reset" in visible_text(second["text"]).lower()
    events = [e for e in await transcript_events(redis) if e["type"] == "unsupported"]
    assert [e["data"] for e in events] == [{"attachment": "sticker"}]


async def test_typing_is_shown_until_the_answer_is_sent(
    fake: FakeTelegram, retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    brain = Brain(retriever, store, ScriptedBackend("Here you go [1]", delay=0.45))
    async with telegram_bot(fake, brain, redis, typing_interval=0.1):
        fake.push(text_message("how do I track my parcel?"))
        await fake.wait_for_messages(1)
        await asyncio.sleep(0.3)  # typing must have stopped
    methods = [c.method for c in fake.calls if c.method in ("sendChatAction", "sendMessage")]
    assert methods[-1] == "sendMessage"
    assert methods.count("sendChatAction") >= 3  # re-sent while the brain worked
    assert fake.sent("sendChatAction")[0] == {"chat_id": CUSTOMER["id"], "action": "typing"}


async def test_typing_stops_when_a_person_holds_the_conversation(
    fake: FakeTelegram, brain: Brain, store: ConversationStore, redis: aioredis.Redis
) -> None:
    await store.start_handoff("telegram", str(CUSTOMER["id"]), "asked for a person")
    async with telegram_bot(fake, brain, redis, typing_interval=0.1):
        fake.push(text_message("hello? anyone there?"))
        deadline = asyncio.get_running_loop().time() + 15
        # Finished once recorded and nothing is left in the inbox or the outbox.
        while (
            not await store.history("telegram", str(CUSTOMER["id"]))
            or await redis.xlen("dm:inbox")
            or await redis.xlen("dm:outbox")
        ):
            assert asyncio.get_running_loop().time() < deadline, "the message was not finished"
            await asyncio.sleep(0.02)
        typed = len(fake.sent("sendChatAction"))
        await asyncio.sleep(0.4)  # four typing intervals: the indicator would be re-sent
        assert len(fake.sent("sendChatAction")) == typed
    assert fake.sent("sendMessage") == []  # the bot stays quiet
    assert (await store.history("telegram", str(CUSTOMER["id"])))[-1].text == "hello? anyone there?"


async def test_typing_stops_when_another_process_sends_the_answer(
    fake: FakeTelegram, retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    # Two processes on one Redis: the first receives (long polling) and has no senders;
    # the second's worker and sender answer (webhook mode, so it does not poll as well).
    brain = Brain(retriever, store, ScriptedBackend("Here you go [1]", delay=0.3))
    flow = Flow(redis, KEYS, name="test", block_seconds=BLOCK_SECONDS)
    webhook = settings_for(
        fake, telegram_webhook_url=WEBHOOK_URL, telegram_webhook_secret=Secret(WEBHOOK_SECRET)
    )
    receiving = TelegramAdapter(
        settings_for(fake), flow.intake.handler, brain.feedback, redis=redis, typing_interval=0.05
    )
    sending = TelegramAdapter(webhook, flow.intake.handler, brain.feedback, redis=redis)
    async with receiving, sending, flow.running(brain.handle, {sending.channel: sending}):
        fake.push(text_message("how do I track my parcel?"))
        await fake.wait_for_messages(1)
        await asyncio.sleep(0.4)  # eight beats of the receiving process's typing loop
        answered = next(c.time for c in fake.calls if c.method == "sendMessage")
        typing = [c.time for c in fake.calls if c.method == "sendChatAction"]
        assert len(typing) >= 3  # shown while the brain worked
        assert all(t < answered for t in typing)  # and not after the answer
        assert not receiving._typing  # the receiving process's loop has ended
    assert await redis.keys("dm:telegram:typing:*") == []


async def test_an_update_seen_before_a_restart_is_not_answered_again(
    fake: FakeTelegram, brain: Brain, redis: aioredis.Redis
) -> None:
    update = text_message("how do I reset my password?")
    async with telegram_bot(fake, brain, redis):
        fake.push(update)
        await fake.wait_for_messages(1)
    # The process died before confirming the offset: Telegram still has the update pending
    # and delivers it again to the restarted bot, followed by a new message.
    async with FakeTelegram() as telegram_after_restart:
        telegram_after_restart.push(update)
        telegram_after_restart.push(text_message("how do I track my parcel?"))
        async with telegram_bot(telegram_after_restart, brain, redis):
            [answer] = await telegram_after_restart.wait_for_messages(1)
            await asyncio.sleep(0.2)
    assert len(telegram_after_restart.sent("sendMessage")) == 1
    assert "track" in visible_text(answer["text"]).lower()


async def test_webhook_checks_the_secret_and_answers_each_update_once(
    fake: FakeTelegram, brain: Brain, redis: aioredis.Redis
) -> None:
    settings = settings_for(
        fake, telegram_webhook_url=WEBHOOK_URL, telegram_webhook_secret=Secret(WEBHOOK_SECRET)
    )
    async with (
        telegram_bot(fake, brain, redis, settings) as adapter,
        serve_web(make_web_app(adapter.web_routes()), "127.0.0.1:0") as port,
        aiohttp.ClientSession() as http,
    ):
        assert fake.sent("setWebhook") == [
            {
                "url": WEBHOOK_URL,
                "secret_token": WEBHOOK_SECRET,
                "allowed_updates": ["message", "callback_query"],
            }
        ]
        hook = f"http://127.0.0.1:{port}/telegram/hook"
        update = {"update_id": 31337, **text_message("how do I reset my password?")}
        for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
            async with http.post(hook, json=update, headers=headers) as response:
                assert response.status == 403
        await asyncio.sleep(0.1)
        assert not fake.sent("sendMessage") and not fake.sent("sendChatAction")
        assert await redis.keys("dm:seen:*") == []

        right = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
        for _ in range(2):  # Telegram retries a delivery it thinks failed
            async with http.post(hook, json=update, headers=right) as response:
                assert response.status == 200
        [reply] = await fake.wait_for_messages(1)
        await asyncio.sleep(0.2)
    assert len(fake.sent("sendMessage")) == 1
    assert reply["chat_id"] == CUSTOMER["id"] and "reset" in visible_text(reply["text"]).lower()
    assert not [c for c in fake.calls if c.method in ("deleteWebhook", "getUpdates")]


async def test_webhook_refuses_updates_while_redis_is_down(
    fake: FakeTelegram, brain: Brain, tmp_path: Path
) -> None:
    """Telegram redelivers a refused update; nothing is acknowledged that could be lost."""
    dead = client(f"unix://{tmp_path / 'no-redis.sock'}", retries=0)
    settings = settings_for(
        fake, telegram_webhook_url=WEBHOOK_URL, telegram_webhook_secret=Secret(WEBHOOK_SECRET)
    )
    # The flow's intake alone: with Redis down, nothing reaches a worker or a sender.
    adapter = TelegramAdapter(settings, Intake(dead, KEYS).handler, brain.feedback, redis=dead)
    async with (
        adapter,
        serve_web(make_web_app(adapter.web_routes()), "127.0.0.1:0") as port,
        aiohttp.ClientSession() as http,
    ):
        update = {"update_id": 4242, **text_message("how do I reset my password?")}
        right = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
        async with http.post(
            f"http://127.0.0.1:{port}/telegram/hook", json=update, headers=right
        ) as response:
            assert response.status == 503
    await dead.aclose()
    assert not fake.sent("sendMessage")


async def test_bad_token_fails_at_start_naming_the_setting(
    fake: FakeTelegram, brain: Brain, redis: aioredis.Redis
) -> None:
    settings = Settings(telegram_token=Secret("777000:WRONG"), telegram_api_url=fake.url)
    adapter = TelegramAdapter(settings, ignore, brain.feedback, redis=redis)
    with pytest.raises(TelegramStartError, match="DESKMATE_TELEGRAM_TOKEN was rejected") as caught:
        await adapter.__aenter__()
    assert "WRONG" not in str(caught.value)
    assert [c.method for c in fake.calls] == ["getMe"]
    with pytest.raises(TelegramStartError, match="DESKMATE_TELEGRAM_TOKEN is not set"):
        TelegramAdapter(Settings(), ignore, brain.feedback, redis=redis)


async def ignore(inbound: Inbound) -> None:
    raise AssertionError(f"no message should arrive: {inbound}")


def test_telegram_settings_are_checked_with_clear_messages() -> None:
    with pytest.raises(SettingsError, match="DESKMATE_TELEGRAM_WEBHOOK_SECRET must be 1-256"):
        Settings.load({"DESKMATE_TELEGRAM_WEBHOOK_SECRET": "has spaces!"})
    with pytest.raises(SettingsError, match="DESKMATE_TELEGRAM_WEBHOOK_URL must be an http"):
        Settings.load({"DESKMATE_TELEGRAM_WEBHOOK_URL": "bot.example.com/hook"})
    webhook_without_secret = Settings.load(
        {"DESKMATE_TELEGRAM_TOKEN": "1:x", "DESKMATE_TELEGRAM_WEBHOOK_URL": WEBHOOK_URL}
    )
    with pytest.raises(TelegramStartError, match="DESKMATE_TELEGRAM_WEBHOOK_SECRET must be set"):
        check_settings(webhook_without_secret)
    check_settings(Settings.load({"DESKMATE_TELEGRAM_TOKEN": "1:x"}))  # polling: fine


async def test_webhook_refuses_hostile_bodies_and_answers_a_cut_emoji(
    fake: FakeTelegram, brain: Brain, redis: aioredis.Redis
) -> None:
    settings = settings_for(
        fake, telegram_webhook_url=WEBHOOK_URL, telegram_webhook_secret=Secret(WEBHOOK_SECRET)
    )
    right = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
    async with (
        telegram_bot(fake, brain, redis, settings) as adapter,
        serve_web(make_web_app(adapter.web_routes()), "127.0.0.1:0") as port,
        aiohttp.ClientSession() as http,
    ):
        hook = f"http://127.0.0.1:{port}/telegram/hook"
        hostile = [
            b"[" * 100_000 + b"]" * 100_000,
            b"\xff\xfe not utf-8",
            b'{"update_id": 1, "message": "not a message"}',
            b'{"update_id": 2, "message": {"chat": [], "from": 7}}',
        ]
        for body in hostile:
            async with http.post(hook, data=body, headers=right) as response:
                assert response.status == 400, body[:40]
        # "\ud83d": half of an emoji, as a client that cut the string sends it.
        update = {"update_id": 4242, **text_message("how do I reset my password? \ud83d")}
        async with http.post(hook, json=update, headers=right) as response:
            assert response.status == 200
        [reply] = await fake.wait_for_messages(1)
    assert "reset" in visible_text(reply["text"]).lower()


async def test_the_delivery_record_keeps_telegrams_message_ids_and_nothing_is_sent_twice(
    fake: FakeTelegram, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender killed after Telegram took a (two-part) reply leaves the parts' message
    ids in the delivery record; the sender that takes the entry over sends nothing."""
    paragraphs = [f"Paragraph {n}: " + "All good things take time. " * 13 for n in range(16)]
    adapter = TelegramAdapter(settings_for(fake), ignore, ignore_feedback, redis=redis)
    async with adapter:
        adapters = {adapter.channel: adapter}
        reply = Reply("\n\n".join(paragraphs), "answer", in_reply_to="1")
        entry_id = await queue_reply(redis, KEYS, "telegram", str(CUSTOMER["id"]), reply)
        record = await killed_after_delivery(redis, KEYS, adapters, monkeypatch)  # type: ignore[arg-type]
        sent = [message["message_id"] for message in fake.delivered]
        assert len(sent) == 2
        assert record == {"attempts": "1", "delivered": f"{sent[0]},{sent[1]}"}
        heir = await taken_over(redis, KEYS, adapters)  # type: ignore[arg-type]
    assert len(fake.sent("sendMessage")) == 2  # not again
    assert heir.redeliveries == 0
    assert await redis.xlen(KEYS.outbox) == 0
    assert await redis.exists(KEYS.delivery(entry_id)) == 0  # finished: the record goes


async def ignore_feedback(feedback: Feedback) -> None:
    raise AssertionError(f"no feedback should arrive: {feedback}")
