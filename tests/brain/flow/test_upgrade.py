"""Unfinished messages queued by a deskmate whose queue keys had no channel are answered
and delivered once, in order, after the upgrade (real Redis, real workers and senders)."""

from __future__ import annotations

import asyncio
import json
from typing import Self

import redis.asyncio as aioredis
from aiohttp import web

from brain.flow.staff_notices import STAFF_CHANNEL
from brain.flow.stream import Outgoing, inbound_to_json
from brain.flow.upgrade import requeue_legacy_entries
from brain.flow.wiring import Flow
from brain.keys import RedisKeys
from brain.types import Inbound, Reply

KEYS = RedisKeys("dm:")


class Recorder:
    """A channel that records what it is asked to deliver."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.sent: list[tuple[str, str]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def web_routes(self) -> list[web.RouteDef]:
        return []

    async def send(self, conversation_id: str, reply: Reply) -> None:
        self.sent.append((conversation_id, reply.text))


async def answer(inbound: Inbound) -> Reply:
    return Reply(f"answer to {inbound.text}", "answer")


async def queue_as_the_old_version(redis: aioredis.Redis, stream: str, *records: str) -> None:
    """XADD and list the records the way the old version did: `{stream}:{conversation id}`."""
    for record in records:
        entry_id = await redis.xadd(stream, {"data": record})
        conversation_id = json.loads(record)["conversation_id"]
        await redis.rpush(f"{stream}:{conversation_id}", entry_id)


async def test_old_queues_are_moved_once_in_order_and_then_worked_off(
    redis: aioredis.Redis,
) -> None:
    await queue_as_the_old_version(
        redis,
        "dm:inbox",
        *(inbound_to_json(Inbound("telegram", "42", "42", f"m{n}", f"q{n}")) for n in (1, 2)),
        inbound_to_json(Inbound("http", "http:c1", "u1", "h1", "hello")),
    )
    # One message was taken by a worker of the old version that is gone now.
    await redis.xgroup_create("dm:inbox", "brain", id="0")
    await redis.xreadgroup("brain", "old-worker", {"dm:inbox": ">"}, count=1)
    # Outbox: a reply and a staff notice of a handed-off conversation, and a staff notice
    # whose handoff has ended meanwhile.
    await redis.hset("dm:handoff:42", mapping={"channel": "telegram", "reason": "asked"})
    await queue_as_the_old_version(
        redis,
        "dm:outbox",
        Outgoing("telegram", "42", Reply("passing you on", "handoff")).to_json(),
        Outgoing(STAFF_CHANNEL, "42", Reply("can I talk to a person?", "handoff")).to_json(),
        Outgoing(STAFF_CHANNEL, "77", Reply("gone", "none")).to_json(),
    )

    assert await requeue_legacy_entries(redis, KEYS) == 5
    assert await requeue_legacy_entries(redis, KEYS) == 0  # a second process starting
    for old in ("dm:inbox:42", "dm:inbox:http:c1", "dm:outbox:42", "dm:outbox:77"):
        assert not await redis.exists(old)
    queued = await redis.lrange("dm:inbox:telegram:42", 0, -1)
    texts = [
        json.loads((await redis.xrange("dm:inbox", i, i))[0][1]["data"])["text"] for i in queued
    ]
    assert texts == ["q1", "q2"]
    assert len(await redis.lrange("dm:inbox:http:http:c1", 0, -1)) == 1
    assert (await redis.xpending("dm:inbox", "brain"))["pending"] == 0
    notices = [Outgoing.from_json(fields["data"]) for _, fields in await redis.xrange("dm:outbox")]
    assert [(n.channel, n.conversation_id, n.about) for n in notices] == [
        ("telegram", "42", None),
        (STAFF_CHANNEL, "telegram:42", ("telegram", "42")),
    ]

    telegram, http, staff = Recorder("telegram"), Recorder("http"), Recorder(STAFF_CHANNEL)
    adapters = {a.channel: a for a in (telegram, http, staff)}
    flow = Flow(redis, KEYS, name="new", reclaim_idle=0.3, block_seconds=0.1)
    async with flow.running(answer, adapters):  # type: ignore[arg-type]
        async with asyncio.timeout(20):
            while len(telegram.sent) < 3 or not http.sent:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a second delivery would arrive now
    assert telegram.sent == [
        ("42", "passing you on"),
        ("42", "answer to q1"),
        ("42", "answer to q2"),
    ]
    assert http.sent == [("http:c1", "answer to hello")]
    assert staff.sent == [("telegram:42", "can I talk to a person?")]
    assert await redis.xlen("dm:inbox") == 0 and await redis.xlen("dm:outbox") == 0
