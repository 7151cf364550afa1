"""What channel tests of delivery share: a reply queued in the outbox as a brain worker
leaves it, and a sender killed right after the platform took it (before it finished the
entry), whose entry another sender then takes over."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import pytest
import redis.asyncio as aioredis

from brain.channel import Adapter
from brain.flow.sender import Sender
from brain.flow.stream import Outgoing
from brain.keys import RedisKeys
from brain.types import Reply


async def queue_reply(
    redis: aioredis.Redis, keys: RedisKeys, channel: str, conversation_id: str, reply: Reply
) -> str:
    """The outbox entry id of `reply`, queued for the conversation."""
    record = Outgoing(channel, conversation_id, reply, time.time()).to_json()
    entry_id: Any = await redis.xadd(keys.outbox, {"data": record})
    await redis.rpush(keys.queue(keys.outbox, channel, conversation_id), entry_id)
    return str(entry_id)


async def killed_after_delivery(
    redis: aioredis.Redis,
    keys: RedisKeys,
    adapters: Mapping[str, Adapter],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Deliver the queued reply with a sender that dies (as if SIGKILLed) once the
    platform answered; the entry's delivery record as it left it."""
    dying = Sender(redis, keys, adapters, "dying", reclaim_idle=0.2)

    async def killed(*args: object) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(dying, "_finish_entry", killed)
    await dying._ensure_group()
    ((entry_id, fields),) = await dying._read(">", count=1)
    with contextlib.suppress(asyncio.CancelledError):
        await dying._handle(entry_id, fields)
    record: Any = await redis.hgetall(keys.delivery(entry_id))
    return dict(record)


async def taken_over(
    redis: aioredis.Redis, keys: RedisKeys, adapters: Mapping[str, Adapter]
) -> Sender:
    """Another sender reclaims what the dead one left pending and finishes it."""
    await asyncio.sleep(0.3)  # past reclaim_idle
    heir = Sender(redis, keys, adapters, "heir", reclaim_idle=0.2)
    await heir._ensure_group()
    for entry in await heir._reclaim():
        await heir._handle(*entry)
    return heir
