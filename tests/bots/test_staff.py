"""Staff commands on real Redis: stats over the last day, the active model, usage."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import redis.asyncio as aioredis

from bots.staff import USAGE, StaffCommands
from retrieval.retriever import Retriever

_sequence = itertools.count(1)


def staff(retriever: Retriever, redis: aioredis.Redis, tmp_path: Path) -> StaffCommands:
    return StaffCommands(
        retriever, redis, prefix="dm:", index_dir=tmp_path / "index", backend_version="quote"
    )


async def add(redis: aioredis.Redis, at: float, kind: str, channel: str, data: object) -> None:
    await redis.xadd(
        "dm:transcripts",
        {
            "type": kind,
            "channel": channel,
            "conversation": "c",
            "user": "u",
            "time": f"{at:.3f}",
            "data": json.dumps(data),
        },
        id=f"{int(at * 1000)}-{next(_sequence)}",
    )


async def test_stats_count_the_last_day_only(
    retriever: Retriever, redis: aioredis.Redis, tmp_path: Path
) -> None:
    now = time.time()
    old = now - 2 * 24 * 3600
    await add(redis, old, "turn", "slack", {"turn": {"role": "user"}})
    await add(redis, old, "feedback", "slack", {"rating": "down"})
    recent = now - 3600
    await add(redis, recent, "turn", "slack", {"turn": {"role": "user"}})
    await add(redis, recent, "turn", "slack", {"turn": {"role": "assistant", "action": "answer"}})
    await add(redis, recent, "turn", "telegram", {"turn": {"role": "user"}})
    await add(
        redis, recent, "turn", "telegram", {"turn": {"role": "assistant", "action": "clarify"}}
    )
    await add(redis, recent, "handoff", "telegram", {"reason": "asked for a person"})
    await add(redis, recent, "feedback", "slack", {"message_id": "1", "rating": "up"})
    await add(redis, recent, "feedback", "slack", {"message_id": "2", "rating": "down"})

    stats = await staff(retriever, redis, tmp_path).stats(now=now)
    assert (stats.messages, stats.answers, stats.clarifications, stats.handoffs) == (2, 1, 1, 1)
    assert dict(stats.ratings) == {"up": 1, "down": 1}
    assert dict(stats.by_channel) == {"slack": 1, "telegram": 1}
    text = stats.render(24)
    assert "messages        2 (slack 1, telegram 1)" in text
    assert "👍 1  👎 1" in text


async def test_stats_page_through_long_streams(
    retriever: Retriever, redis: aioredis.Redis, tmp_path: Path
) -> None:
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(2500):
            pipe.xadd(
                "dm:transcripts",
                {
                    "type": "turn",
                    "channel": "slack",
                    "data": json.dumps({"turn": {"role": "user"}}),
                },
                id=f"{int((now - 60) * 1000)}-{n + 1}",
            )
        await pipe.execute()
    assert (await staff(retriever, redis, tmp_path).stats(now=now)).messages == 2500


async def test_model_and_usage(retriever: Retriever, redis: aioredis.Redis, tmp_path: Path) -> None:
    commands = staff(retriever, redis, tmp_path)
    assert "quote" in await commands.run("model")
    await redis.set("dm:model:active", "lora-2024-06-01")
    assert "lora-2024-06-01" in await commands.run("MODEL")
    assert await commands.run("launch rockets") == USAGE
    assert "nothing to reload" in await commands.run("faq reload")  # built in memory, no files
