"""DESKMATE_RETENTION_DAYS: what is older goes, on a real Redis."""

from __future__ import annotations

import json
import time

import pytest
import redis.asyncio as aioredis

from brain.keys import RedisKeys
from brain.retention import DAY_SECONDS, Retention, trim
from brain.settings import Settings, SettingsError

KEYS = RedisKeys("dm:")


async def test_entries_older_than_the_retention_are_trimmed(redis: aioredis.Redis) -> None:
    now = time.time()
    old, recent = now - 40 * DAY_SECONDS, now - 5 * DAY_SECONDS
    for stream in (KEYS.transcripts, KEYS.undelivered):
        for when in (old, recent):
            await redis.xadd(stream, {"channel": "telegram", "at": str(when)},
                             id=f"{int(when * 1000)}-0")  # fmt: skip
    for when in (old, recent):
        await redis.lpush(KEYS.stats_gaps, json.dumps({"question": "q", "time": when}))

    assert await trim(redis, KEYS, days=30, now=now) == 3
    for stream in (KEYS.transcripts, KEYS.undelivered):
        entries = await redis.xrange(stream)
        assert [float((fields or {})["at"]) for _, fields in entries or []] == [recent]
    [gap] = await redis.lrange(KEYS.stats_gaps, 0, -1)
    assert json.loads(gap)["time"] == recent
    assert await trim(redis, KEYS, days=30, now=now) == 0  # idempotent: every process trims


async def test_the_schedule_trims_when_it_starts(redis: aioredis.Redis) -> None:
    await redis.xadd(KEYS.transcripts, {"channel": "http"}, id="1000-0")  # 1970
    async with Retention(redis, KEYS, days=1, interval=3600):
        assert await redis.xlen(KEYS.transcripts) == 0


def test_retention_setting_bounds_idle_histories_and_names_itself() -> None:
    assert Settings.load({}).retention_days == 365
    week = Settings.load({"DESKMATE_RETENTION_DAYS": "3"})
    assert week.history_ttl == 3 * DAY_SECONDS  # shorter than the 7-day idle TTL
    assert Settings.load({"DESKMATE_RETENTION_DAYS": "0"}).history_ttl == 7 * DAY_SECONDS
    with pytest.raises(SettingsError, match="DESKMATE_RETENTION_DAYS"):
        Settings.load({"DESKMATE_RETENTION_DAYS": "a month"})
