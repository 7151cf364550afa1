"""Conversation state on a real Redis: a conversation is its channel and its id, and the
keys an earlier version wrote without the channel are still read, then moved."""

from __future__ import annotations

import json
from itertools import count

import redis.asyncio as aioredis

from brain.conversations import ConversationStore
from brain.pipeline import Brain
from brain.types import Channel, Inbound, Turn

_ids = count(1)
TS = "1700000000.000100"


def message(channel: Channel, conversation: str, text: str) -> Inbound:
    return Inbound(channel, conversation, "u1", f"m{next(_ids)}", text)


async def test_the_same_id_in_two_channels_is_two_conversations(
    brain: Brain, store: ConversationStore, redis: aioredis.Redis
) -> None:
    # Telegram chat 12345 and a Slack conversation that happens to have the same id.
    answered = await brain.handle(message("telegram", "12345", "how do I track my parcel?"))
    assert answered.action == "answer"
    assert (await brain.handle(message("slack", "12345", "/human"))).action == "handoff"

    telegram = await store.history("telegram", "12345")
    slack = await store.history("slack", "12345")
    assert [t.text for t in telegram if t.role == "user"] == ["how do I track my parcel?"]
    assert [t.text for t in slack if t.role == "user"] == ["/human"]
    assert await store.handoff("telegram", "12345") is None
    assert (await store.handoff("slack", "12345") or {})["channel"] == "slack"
    # The handoff holds the Slack conversation only: Telegram is still answered.
    reply = await brain.handle(message("telegram", "12345", "how do I reset my password?"))
    assert reply.action == "answer"
    assert await redis.exists("dm:conv:telegram:12345", "dm:conv:slack:12345") == 2

    await brain.handle(message("slack", "12345", "/reset"))
    assert await store.history("slack", "12345") == []
    assert len(await store.history("telegram", "12345")) == 4


async def write_as_the_old_version(redis: aioredis.Redis, conversation_id: str) -> None:
    """History, handoff and staff thread under the names of the version before channels."""
    turns = [Turn("user", "where is my parcel?", 1.0), Turn("assistant", "Passing you on.", 2.0)]
    await redis.rpush(f"dm:conv:{conversation_id}", *(json.dumps(t.to_json()) for t in turns))
    await redis.expire(f"dm:conv:{conversation_id}", 600)
    await redis.hset(
        f"dm:handoff:{conversation_id}",
        mapping={"channel": "telegram", "reason": "asked for a person", "staff_ts": TS},
    )
    await redis.set(f"dm:handoff:thread:{TS}", conversation_id)


async def test_keys_of_the_old_version_are_read_and_moved(
    store: ConversationStore, redis: aioredis.Redis
) -> None:
    await write_as_the_old_version(redis, "42")

    history = await store.history("telegram", "42")
    assert [t.text for t in history] == ["where is my parcel?", "Passing you on."]
    assert not await redis.exists("dm:conv:42", "dm:handoff:42")
    assert 0 < await redis.ttl("dm:conv:telegram:42") <= 600  # moved with its lifetime
    state = await store.handoff("telegram", "42")
    assert state is not None and state["staff_ts"] == TS
    # The staff thread still names the bare id; the moved handoff says its channel.
    assert await store.conversation_of_thread(TS) == ("telegram", "42")


async def test_an_old_staff_thread_finds_a_handoff_not_moved_yet(
    store: ConversationStore, redis: aioredis.Redis
) -> None:
    await write_as_the_old_version(redis, "42")
    assert await store.conversation_of_thread(TS) == ("telegram", "42")
    assert await store.conversation_of_thread("1700000000.999999") is None


async def test_writing_first_keeps_the_old_history(
    brain: Brain, store: ConversationStore, redis: aioredis.Redis
) -> None:
    await write_as_the_old_version(redis, "42")
    await redis.delete("dm:handoff:42")  # no longer handed off
    await brain.handle(message("telegram", "42", "thanks"))  # appended without a read first
    texts = [t.text for t in await store.history("telegram", "42")]
    assert texts[:3] == ["where is my parcel?", "Passing you on.", "thanks"]


async def test_reset_forgets_the_old_keys_too(
    brain: Brain, store: ConversationStore, redis: aioredis.Redis
) -> None:
    await write_as_the_old_version(redis, "42")
    await brain.handle(message("telegram", "42", "/reset"))
    assert await store.history("telegram", "42") == []
    assert await store.handoff("telegram", "42") is None
    assert await store.conversation_of_thread(TS) is None
    assert await redis.keys("dm:conv:*") == [] and await redis.keys("dm:handoff:*") == []
