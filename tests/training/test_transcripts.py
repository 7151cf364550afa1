"""Exporting conversations from the transcripts stream (real Redis, real brain)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bots.cli import main
from brain.conversations import ConversationStore
from brain.pipeline import Brain
from brain.redis_server import EmbeddedRedis
from brain.types import Feedback, Inbound, Turn
from training.transcripts import Message, export_transcripts, parse_when, read_conversations


def inbound(text: str, conversation: str = "42", channel: str = "telegram") -> Inbound:
    return Inbound(channel, conversation, "u1", f"m{time.monotonic_ns()}", text)  # type: ignore[arg-type]


async def test_export_attaches_ratings_agent_turns_and_splits_at_reset(
    brain: Brain, store: ConversationStore, redis: aioredis.Redis
) -> None:
    await brain.handle(inbound("How long does a refund take?"))
    await brain.feedback(Feedback("telegram", "42", "u1", "901", "up"))
    await brain.handle(inbound("/human"))
    await brain.handle(inbound("it is about order 5"))
    await store.append(inbound(""), Turn("agent", "Your refund was sent today.", user_id="staff1"))
    await brain.handle(inbound("/reset"))
    await brain.handle(inbound("Do you ship to Norway?"))
    await brain.feedback(Feedback("telegram", "42", "u1", "902", "down"))
    await brain.handle(inbound("What sizes do you have?", conversation="7", channel="slack"))

    conversations = await export_transcripts(redis, "dm:")
    assert [c.meta["id"] for c in conversations] == ["telegram:42", "telegram:42#2", "slack:7"]
    first, second, _ = conversations
    roles = [(m.role, m.action, m.rating) for m in first.messages]
    assert roles == [
        ("user", "", ""),
        ("assistant", "answer", "up"),  # rated by the feedback right after it
        ("user", "", ""),
        ("assistant", "handoff", ""),
        ("user", "", ""),
        ("agent", "", ""),
    ]
    assert first.messages[1].sources  # FAQ ids the answer used
    # Customer messages carry how they read (the word list here); commands carry none.
    mood = first.messages[0].mood
    assert mood is not None and mood["source"] == "regex" and mood["anger"] == 0.0
    assert first.messages[2].mood is None
    assert Message.from_json(first.messages[0].to_json()).mood == mood
    assert first.meta["handoffs"][0]["reason"] == "asked for a person"
    assert first.meta["ratings"] == {"up": 1, "down": 0}
    assert [(m.role, m.rating) for m in second.messages][-1] == ("assistant", "down")

    only_slack = await export_transcripts(redis, "dm:", channel="slack")
    assert [c.meta["id"] for c in only_slack] == ["slack:7"]
    assert await export_transcripts(redis, "dm:", since=time.time() + 60) == []


async def test_rating_goes_to_the_bot_turn_with_its_message_id(
    store: ConversationStore, redis: aioredis.Redis
) -> None:
    message = inbound("hi")
    await store.append(message, Turn("user", "q1"), Turn("assistant", "a1", message_id="500"))
    await store.append(message, Turn("user", "q2"), Turn("assistant", "a2", message_id="501"))
    await store.record_event("feedback", message, {"message_id": "500", "rating": "up"})
    (conversation,) = await export_transcripts(redis, "dm:")
    assert [m.rating for m in conversation.messages] == ["", "up", "", ""]


def test_dates_are_utc_and_until_includes_the_day() -> None:
    assert parse_when("2026-11-01") == 1793491200.0
    assert parse_when("2026-11-01", end_of_day=True) == 1793491200.0 + 86400
    assert parse_when("2026-11-01T09:30+01:00") == 1793491200.0 + 8.5 * 3600


async def test_export_command(
    brain: Brain, redis_server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await brain.handle(inbound("How long does a refund take?"))
    monkeypatch.setenv("DESKMATE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "t.jsonl"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    args = ["transcripts", "export", "--since", today, "--until", today]
    # The command runs its own event loop, as from a shell.
    assert await asyncio.to_thread(main, [*args, "--channel", "telegram", "--out", str(out)]) == 0
    (conversation,) = read_conversations(out)
    assert [m.role for m in conversation.messages] == ["user", "assistant"]
    bad = ["transcripts", "export", "--since", "yesterday", "--out", str(out)]
    assert await asyncio.to_thread(main, bad) == 2
