"""The handoff records of an earlier version (no `state`) join the queue sets at start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis.asyncio as aioredis

from bots.staff import StaffCommands
from brain.conversations import ConversationStore
from brain.handoff.machine import Change, Event, State
from retrieval.retriever import Retriever


async def test_earlier_handoffs_are_indexed_once_and_listed_in_the_queue(
    redis: aioredis.Redis, store: ConversationStore, retriever: Retriever, tmp_path: Path
) -> None:
    now = time.time()
    # As the version before the state machine wrote them (with the conversation's TTL)...
    await redis.hset(
        "dm:handoff:telegram:7",
        mapping={"reason": "asked for a person", "since": f"{now - 1800:.3f}", "user": "7"},
    )
    await redis.expire("dm:handoff:telegram:7", 3600)
    await redis.hset(
        "dm:handoff:slack:D9",
        mapping={
            "reason": "customer seems upset",
            "since": f"{now - 7200:.3f}",
            "channel": "slack",
            "staff_channel": "CSTAFF",
            "staff_ts": "1700000000.000100",
        },
    )
    await redis.set("dm:handoff:thread:1700000000.000100", '["slack", "D9"]')
    # ... and the one before that, named without the channel (the hash names it).
    await redis.hset(
        "dm:handoff:55",
        mapping={
            "reason": "not covered by the FAQ",
            "since": f"{now - 600:.3f}",
            "channel": "http",
        },
    )
    await redis.hset("dm:handoff:77", mapping={"reason": "no channel known"})
    # A handoff of this version is already indexed.
    await store.start_handoff("telegram", "1", "asked for a person", user_id="1")
    staff = StaffCommands(
        retriever, redis, prefix="dm:", index_dir=tmp_path, backend_version="quote"
    )
    before = await staff.run("queue")
    assert "1 open handoff:" in before and "telegram:7" not in before

    # Two processes start together: each earlier handoff is indexed once.
    counts = await asyncio.gather(
        store.handoffs.index_earlier_records(now), store.handoffs.index_earlier_records(now)
    )
    assert sum(counts) == 3
    assert await store.handoffs.index_earlier_records(now) == 0  # and never again

    assert await redis.zrange("dm:handoffs:open", 0, -1) == [
        "slack:D9",
        "telegram:7",
        "http:55",
        "telegram:1",
    ]
    assert await redis.zrange("dm:handoffs:waiting", 0, -1) == await redis.zrange(
        "dm:handoffs:open", 0, -1
    )
    listed = (await staff.run("queue")).splitlines()
    assert listed[0] == "4 open handoffs:"
    assert "slack:D9" in listed[1] and "2 h 00" in listed[1] and "#1 queued" in listed[1]
    assert "telegram:7" in listed[2] and "30 min" in listed[2] and "#2 queued" in listed[2]
    assert "http:55" in listed[3] and "#3 queued" in listed[3]
    # Open until it ends, like a handoff of this version; the old name moved to the new.
    assert await redis.ttl("dm:handoff:telegram:7") == -1
    assert not await redis.exists("dm:handoff:55")
    assert (await store.handoff_record("http", "55")).reason == "not covered by the FAQ"
    assert await redis.hgetall("dm:handoff:77") == {"reason": "no channel known"}  # left alone
    assert await redis.get("dm:handoff:thread:1700000000.000100") == '["slack", "D9"]'
    assert await store.handoffs.position("telegram", "7") == (2, 4)

    # Their first transition works as for any record: a version, an id, out of the queue.
    claimed = await store.handoffs.apply("slack", "D9", Change(Event.CLAIM, agent="UANNA"))
    assert claimed.applied and claimed.after.state is State.CLAIMED
    assert claimed.after.version == 1 and claimed.after.id
    assert claimed.after.staff_ts == "1700000000.000100"
    assert await store.handoffs.position("telegram", "7") == (1, 3)
