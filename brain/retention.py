"""How long customers' words are kept: DESKMATE_RETENTION_DAYS, applied on a schedule.

Histories (`conv:*`) expire on their own when idle (DESKMATE_CONVERSATION_TTL, never
longer than the retention). What grows without end is trimmed here, in every
`deskmate serve` process (each trim is idempotent): the `transcripts` and `undelivered`
streams lose entries older than the retention (XTRIM MINID: stream ids start with the
time they were added), and the content-gap questions (`stats:gaps`) older than it go.
Day counters (`stats:day:*`) hold no text and stay. Export transcripts for training
before they age out (`deskmate transcripts export`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Self

import redis.asyncio as aioredis

from brain.keys import RedisKeys
from brain.polling import Poller

log = logging.getLogger(__name__)
DAY_SECONDS = 24 * 3600
TRIM_INTERVAL_SECONDS = 3600.0


def cutoff_id(days: int, now: float | None = None) -> str:
    """The stream id before which entries are older than `days` days."""
    now = time.time() if now is None else now
    return f"{int((now - days * DAY_SECONDS) * 1000)}-0"


async def trim(redis: aioredis.Redis, keys: RedisKeys, days: int, now: float | None = None) -> int:
    """Remove what is older than `days` days; the number of entries removed."""
    now = time.time() if now is None else now
    minid = cutoff_id(days, now)
    removed = 0
    for stream in (keys.transcripts, keys.undelivered):
        removed += int(await redis.xtrim(stream, minid=minid, approximate=False))
    oldest = now - days * DAY_SECONDS
    gaps = await redis.lrange(keys.stats_gaps, 0, -1)
    stale = [raw for raw in gaps if float(json.loads(raw).get("time") or 0.0) < oldest]
    if stale:
        async with redis.pipeline(transaction=False) as pipe:
            for raw in stale:
                pipe.lrem(keys.stats_gaps, 1, raw if isinstance(raw, str) else raw.decode())
            await pipe.execute()
        removed += len(stale)
    return removed


class Retention:
    """Trims what is older than `days` days when entered and every `interval` seconds."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RedisKeys,
        days: int,
        interval: float = TRIM_INTERVAL_SECONDS,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.days = days
        self._poller = Poller(self.check, interval, "retention")

    async def check(self) -> int:
        removed = await trim(self.redis, self.keys, self.days)
        if removed:
            log.info("retention: removed %d entries older than %d days", removed, self.days)
        return removed

    async def __aenter__(self) -> Self:
        await self.check()
        self._poller.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._poller.stop()
