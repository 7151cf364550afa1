"""Partial answers end to end: a slow streaming generator behind the real brain and the
durable flow, the real Telegram and Slack clients against the fake servers, real Redis.
What is asserted is what the customer's chat shows over time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots.slack.adapter import SlackAdapter
from bots.telegram.adapter import TelegramAdapter
from bots.web import make_web_app, serve_web
from brain.answering.grounded import GenerativeBackend, PartialAnswer
from brain.conversations import ConversationStore
from brain.flow.wiring import Flow
from brain.keys import RedisKeys
from brain.pipeline import Brain
from brain.prompt import Messages
from brain.settings import Secret, Settings
from retrieval.retriever import Retriever
from tests.fakes.slack import FakeSlack, signed_headers
from tests.fakes.telegram import CUSTOMER, FakeTelegram, text_message, visible_text

KEYS = RedisKeys("dm:")
BLOCK_SECONDS = 0.1
QUESTION = "How long do I have to return an item?"
GROUNDED = "You can return unworn items within 30 days of delivery [1]."
MADE_UP = "You can return unworn items within 45 days of delivery [1]."
QUOTED = "within 30 days of delivery"  # from the returns entry, quoted on a fallback
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


class SlowStreamingGenerator:
    """Writes `text` a word at a time, `delay` seconds per word, as the lean engine's
    `HFGenerator.stream` yields it (pieces carry their leading space)."""

    version = "slow-1"
    context_tokens = 2048

    def __init__(self, text: str, delay: float = 0.15) -> None:
        self.text = text
        self.delay = delay

    def count_tokens(self, messages: Messages) -> int:
        return sum(len(m["content"].split()) for m in messages)

    async def stream(self, messages: Messages) -> AsyncIterator[str]:
        words = self.text.split(" ")
        for n, word in enumerate(words):
            await asyncio.sleep(self.delay)
            yield word if n == 0 else f" {word}"

    async def generate(self, prompts: Sequence[Messages]) -> list[str]:
        await asyncio.sleep(self.delay * len(self.text.split()))
        return [self.text for _ in prompts]

    async def aclose(self) -> None:
        pass


def streaming_brain(retriever: Retriever, store: ConversationStore, text: str) -> Brain:
    return Brain(retriever, store, GenerativeBackend(SlowStreamingGenerator(text)))


@asynccontextmanager
async def telegram_flow(
    fake: FakeTelegram, brain: Brain, redis: aioredis.Redis, *, stream: bool
) -> AsyncIterator[Flow]:
    """The Telegram channel on the durable flow, as `deskmate serve` runs it with
    DESKMATE_STREAM_REPLIES on or off."""
    flow = Flow(redis, KEYS, name="test", block_seconds=BLOCK_SECONDS)
    settings = Settings(telegram_token=Secret(fake.token), telegram_api_url=fake.url)
    adapter = TelegramAdapter(settings, flow.intake.handler, brain.feedback, redis=redis)
    async with (
        adapter,
        flow.running(
            brain.handle,
            {adapter.channel: adapter},
            streaming=brain.handle if stream else None,
            show_partials=stream,
        ),
    ):
        yield flow


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def final_edit(fake: FakeTelegram) -> dict[str, Any] | None:
    """The edit that put the final reply in place (HTML, with its buttons)."""
    edits = [e for e in fake.sent("editMessageText") if e.get("parse_mode") == "HTML"]
    return edits[-1] if edits else None


async def test_telegram_shows_the_first_words_then_edits_the_message_into_the_reply(
    fake: FakeTelegram, retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    brain = streaming_brain(retriever, store, GROUNDED)
    async with telegram_flow(fake, brain, redis, stream=True):
        asked = time.monotonic()
        fake.push(text_message(QUESTION))
        [first] = await fake.wait_for_messages(1)
        first_at = next(c.time for c in fake.calls if c.method == "sendMessage")
        await fake.wait_for(lambda: final_edit(fake) is not None, what="the final edit")
        done_at = next(c.time for c in fake.calls if c.payload is final_edit(fake))
        await asyncio.sleep(0.5)  # nothing more may come
    # The first words, marked unfinished, well before the whole answer (8 words x 0.15 s).
    assert first_at - asked < 1.0, first_at - asked
    assert done_at - first_at > 0.5
    assert first["chat_id"] == CUSTOMER["id"] and "parse_mode" not in first
    assert first["text"].startswith("You") and first["text"].endswith(" …")
    assert "[1]" not in first["text"]
    # One message: the partial one, edited as words came, then into the reply.
    assert len(fake.sent("sendMessage")) == 1
    partial_edits = [e for e in fake.sent("editMessageText") if "parse_mode" not in e]
    assert all(e["text"].endswith(" …") for e in partial_edits)
    final = final_edit(fake)
    assert final is not None
    assert fake.calls[-1].payload is final or fake.calls[-1].method != "editMessageText"
    [message] = fake.delivered
    assert "30 days of delivery" in message["text"] and "…" not in message["text"]
    assert message["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "fb:up"
    assert visible_text(final["text"]) == message["text"]


async def test_a_guard_failure_stops_the_partial_text_and_the_quote_replaces_it(
    fake: FakeTelegram, retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    brain = streaming_brain(retriever, store, MADE_UP)
    async with telegram_flow(fake, brain, redis, stream=True):
        fake.push(text_message(QUESTION))
        await fake.wait_for(lambda: final_edit(fake) is not None, what="the final edit")
    shown = [m["text"] for m in fake.sent("sendMessage")] + [
        e["text"] for e in fake.sent("editMessageText") if "parse_mode" not in e
    ]
    assert shown and not any("45" in text for text in shown)  # never the made-up number
    assert len(fake.sent("sendMessage")) == 1
    [message] = fake.delivered
    assert QUOTED in message["text"] and "45" not in message["text"]
    history = await store.history("telegram", str(CUSTOMER["id"]))
    assert history[-1].model_version.startswith("quote (fallback from slow-1")


async def test_with_streaming_off_the_reply_is_sent_once_and_nothing_is_edited(
    fake: FakeTelegram, retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    brain = streaming_brain(retriever, store, GROUNDED)
    async with telegram_flow(fake, brain, redis, stream=False):
        fake.push(text_message(QUESTION))
        [reply] = await fake.wait_for_messages(1)
        await asyncio.sleep(0.3)
    assert fake.sent("editMessageText") == [] and len(fake.sent("sendMessage")) == 1
    assert "30 days of delivery" in visible_text(reply["text"])
    assert await redis.xlen(KEYS.partials) == 0


async def test_slack_shows_the_answer_in_the_placeholder_it_then_replaces(
    retriever: Retriever, store: ConversationStore, redis: aioredis.Redis, data_dir: Path
) -> None:
    fake = FakeSlack()
    brain = streaming_brain(retriever, store, GROUNDED)
    async with serve_web(fake.app(), "127.0.0.1:0") as fake_port:
        fake.url = f"http://127.0.0.1:{fake_port}"
        settings = Settings(
            data_dir=data_dir,
            slack_bot_token=Secret(fake.token),
            slack_signing_secret=Secret(SECRET),
            slack_api_url=f"{fake.url}/api",
        )
        flow = Flow(redis, KEYS, name="test", block_seconds=BLOCK_SECONDS)
        adapter = SlackAdapter(settings, flow.intake.handler, brain.feedback, redis=redis)
        async with (
            adapter,
            serve_web(make_web_app(adapter.web_routes()), "127.0.0.1:0") as port,
            aiohttp.ClientSession() as session,
            flow.running(
                brain.handle, {"slack": adapter}, streaming=brain.handle, show_partials=True
            ),
        ):
            event = {
                "type": "message",
                "channel_type": "im",
                "channel": "D1",
                "user": "U1",
                "text": QUESTION,
                "ts": "1700000001.000200",
            }
            body = json.dumps(
                {"type": "event_callback", "team_id": "T1", "event_id": "Ev1", "event": event}
            )
            headers = signed_headers(body, SECRET, "application/json")
            url = f"http://127.0.0.1:{port}/slack/events"
            async with session.post(url, data=body.encode(), headers=headers) as response:
                assert response.status == 200
            await fake.wait_for(lambda: any("blocks" in p for p in fake.payloads("chat.update")))
            await asyncio.sleep(0.3)
    [placeholder] = fake.responses("chat.postMessage")
    updates = fake.payloads("chat.update")
    assert all(u["ts"] == placeholder["ts"] for u in updates)
    partial, *_, final = updates
    assert partial["text"].startswith("You") and partial["text"].endswith(" …")
    assert "blocks" not in partial and "[1]" not in partial["text"]
    assert "30 days of delivery" in final["text"] and "blocks" in final
    assert all("blocks" not in u for u in updates[:-1])  # nothing partial after the reply


async def test_partial_answers_are_whole_words_throttled_and_stop_at_a_guard() -> None:
    shown: list[str] = []

    async def on_partial(text: str) -> None:
        shown.append(text)

    partial = PartialAnswer(on_partial, passage_count=1, sources=["30 days"], interval=0.2)
    await partial.offer("You")  # a word still being written: nothing yet
    await partial.offer("You can")
    await partial.offer("You can return it [1")  # throttled
    assert shown == ["You"]
    await asyncio.sleep(0.25)
    await partial.offer("You can return it [1] within 3")
    assert shown == ["You", "You can return it within"]  # no marker, no half-written number
    await asyncio.sleep(0.25)
    await partial.offer("You can return it [1] within 45 days")
    await asyncio.sleep(0.25)
    await partial.offer("You can return it [1] within 45 days or 30 days.")
    assert shown == ["You", "You can return it within"] and partial.stopped
