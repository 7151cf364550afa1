"""Erasing one customer's data (`deskmate forget`) on a real Redis, through the real brain."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from bots.cli import main
from brain.erasure import Eraser
from brain.flow.stream import Intake
from brain.keys import RedisKeys
from brain.pipeline import Brain
from brain.redis_server import EmbeddedRedis
from brain.types import Feedback, Inbound

KEYS = RedisKeys("dm:")


def said(conversation: str, number: int, text: str, user: str | None = None) -> Inbound:
    return Inbound("telegram", conversation, user or conversation, f"{number}", text)


async def two_customers(brain: Brain, redis: aioredis.Redis) -> None:
    """Customer 42 asks, rates, asks for a person and has a message still queued;
    customer 43 only asks. Both write into content gaps' raw material."""
    await brain.handle(said("42", 1, "how do I track my parcel? my mail is ann@example.com"))
    await brain.feedback(Feedback("telegram", "42", "42", "2", "up"))
    await brain.handle(said("42", 3, "/human"))
    await Intake(redis, KEYS).submit(said("42", 4, "still waiting, ann@example.com"))
    # An answer to it being shown as it is written (streaming).
    await redis.hset(KEYS.partial("telegram", "42", "4"), mapping={"text": "Sorry, ann"})
    await brain.handle(said("43", 1, "how do I reset my password?"))
    for conversation, question in (("42", "ann@example.com?"), ("43", "lost my login")):
        gap = {"question": question, "why": "handoff", "time": 1.0, "channel": "telegram",
               "conversation": conversation}  # fmt: skip
        await redis.lpush(KEYS.stats_gaps, json.dumps(gap))


async def everything(redis: aioredis.Redis) -> str:
    """Every key and stream entry as text, to search for a customer's traces."""
    parts: list[str] = []
    for key in sorted(str(k) for k in await redis.keys("*")):
        kind = await redis.type(key)
        if kind == "stream":
            parts.append(f"{key} {await redis.xrange(key)!r}")
        elif kind == "list":
            parts.append(f"{key} {await redis.lrange(key, 0, -1)!r}")
        elif kind == "hash":
            parts.append(f"{key} {await redis.hgetall(key)!r}")
        elif kind == "zset":
            parts.append(f"{key} {await redis.zrange(key, 0, -1)!r}")
        else:
            parts.append(key)
    return "\n".join(parts)


async def test_a_conversation_is_erased_and_no_other(brain: Brain, redis: aioredis.Redis) -> None:
    await two_customers(brain, redis)
    before = await everything(redis)
    assert "ann@example.com" in before and "dm:handoff:telegram:42" in before

    dry = await Eraser(redis, KEYS).forget("telegram", conversation="42", dry_run=True)
    assert await everything(redis) == before  # a dry run changes nothing
    assert "dm:conv:telegram:42" in dry.keys and dry.stream_entries[KEYS.transcripts] > 3

    done = await Eraser(redis, KEYS).forget("telegram", conversation="42")
    assert done.keys == dry.keys and done.stream_entries == dry.stream_entries
    after = await everything(redis)
    assert "ann@example.com" not in after
    assert "telegram:42" not in after and "'42'" not in after  # keys, queues, handoff members
    assert await redis.zcard(KEYS.handoff_open) == 0
    assert await redis.xlen(KEYS.inbox) == 0  # the message still queued went too
    assert len(await redis.keys("dm:handoffs:record:*")) == 0
    # The other customer is untouched.
    assert await redis.exists("dm:conv:telegram:43")
    assert "reset my password" in after and await redis.llen(KEYS.stats_gaps) == 1


async def test_a_user_is_erased_from_every_conversation_they_wrote_in(
    brain: Brain, redis: aioredis.Redis
) -> None:
    await two_customers(brain, redis)
    # The same person in a group chat, beside someone else.
    await brain.handle(said("-100", 1, "do you ship to Norway? ann@example.com", user="42"))
    await brain.handle(said("-100", 2, "and to Sweden?", user="77"))
    erasure = await Eraser(redis, KEYS).forget("telegram", user="42")
    assert erasure.conversations == [("telegram", "-100"), ("telegram", "42")]
    after = await everything(redis)
    assert "ann@example.com" not in after and "Sweden" not in after  # whole conversations
    assert await redis.exists("dm:conv:telegram:43")


async def test_forget_command_teaches_and_erases(
    brain: Brain,
    redis: aioredis.Redis,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["forget", "--help"])
    assert "GDPR" in capsys.readouterr().out
    await brain.handle(Inbound("http", "http:widget-42", "v7", "m1", "hi, I'm ann@example.com"))
    monkeypatch.setenv("DESKMATE_REDIS_URL", redis_server.url)
    assert main(["forget", "--channel", "http"]) == 2  # names nobody
    assert "--conversation" in capsys.readouterr().err
    # The CLI runs its own event loop: call it from a thread, as a user's shell would.
    import asyncio

    code = await asyncio.to_thread(
        main, ["forget", "--channel", "http", "--conversation", "widget-42"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "erased:" in out and "http http:widget-42" in out
    assert "ann@example.com" not in await everything(redis)
