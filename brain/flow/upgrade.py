"""Entries left in the message flow by a deskmate whose queue keys had no channel.

Before conversations were keyed by channel and id, a conversation's unfinished entries were
listed in `inbox:{id}` / `outbox:{id}`; they are now listed in `inbox:{channel}:{id}` /
`outbox:{channel}:{id}`, where the new version would never look for the old ones.
`requeue_legacy_entries` runs when a process starts, before its channels, workers and
senders: each entry of an old-named queue is added again to its stream, in order, listed
under its conversation's new queue, and the old entry is acknowledged and deleted, in one
atomic step per queue (so processes starting together, or a start cut short, move each
entry once). A staff notice of the old version did not name the customer's channel; it is
read from the conversation's handoff, and a notice whose handoff is gone is dropped (the
desk would ignore it).

Stop every process of the old version before starting the new one: the two name the
queues and the conversation locks differently.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis

from brain.flow.staff_notices import STAFF_CHANNEL, desk_conversation_id
from brain.flow.stream import INBOX_GROUP, OUTBOX_GROUP, Outgoing, call_redis
from brain.keys import RedisKeys

log = logging.getLogger(__name__)

# KEYS: stream, old-named queue, new queues. ARGV: group, then for each entry: its id, the
# index in KEYS of its new queue (0: drop it) and its record. Entries are re-added in the
# old queue's order, so their new ids keep it; an id with no record (no longer in the
# stream) is dropped with the old queue.
REQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local moves = {}
for i = 2, #ARGV, 3 do moves[ARGV[i]] = {tonumber(ARGV[i + 1]), ARGV[i + 2]} end
local moved = 0
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local move = moves[id]
  if move then
    if move[1] > 0 then
      redis.call('RPUSH', KEYS[move[1]], redis.call('XADD', KEYS[1], '*', 'data', move[2]))
      moved = moved + 1
    end
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
  end
end
redis.call('DEL', KEYS[2])
return moved
"""


async def requeue_legacy_entries(redis: aioredis.Redis, keys: RedisKeys) -> int:
    """Move the entries of old-named queues to their conversations' new queues (see the
    module docstring); the number moved."""
    requeue = redis.register_script(REQUEUE)
    moved = 0
    for stream, group in ((keys.inbox, INBOX_GROUP), (keys.outbox, OUTBOX_GROUP)):
        entries: Any = await call_redis(f"reading {stream}", redis.xrange(stream))
        records = {
            str(entry_id): fields["data"] for entry_id, fields in entries if "data" in fields
        }
        old_queues = {
            keys.legacy_queue(stream, conversation_id)
            for conversation_id in filter(None, map(_legacy_conversation_id, records.values()))
        }
        for old_queue in sorted(old_queues):
            listed: Any = await call_redis("reading a queue", redis.lrange(old_queue, 0, -1))
            if not listed:
                continue
            new_queues: list[str] = []
            args: list[Any] = [group]
            for entry_id in listed:
                if entry_id not in records:
                    continue
                move = await _new_home(redis, keys, stream, records[entry_id])
                if move is None:
                    args += [entry_id, 0, ""]
                    continue
                queue, record = move
                if queue not in new_queues:
                    new_queues.append(queue)
                args += [entry_id, 3 + new_queues.index(queue), record]
            count = await call_redis(
                "requeueing entries", requeue(keys=[stream, old_queue, *new_queues], args=args)
            )
            moved += int(count)
    if moved:
        log.warning("moved %d unfinished messages to the queues of this version", moved)
    return moved


def _legacy_conversation_id(record: str) -> str | None:
    """The conversation id an entry of the old version was queued under; None for an entry
    written by this version whose queue name could not be an old one (a staff notice)."""
    data = json.loads(record)
    if data.get("channel") == STAFF_CHANNEL and data.get("about"):
        return None
    return str(data["conversation_id"])


async def _new_home(
    redis: aioredis.Redis, keys: RedisKeys, stream: str, record: str
) -> tuple[str, str] | None:
    """(new queue, record) of an entry of the old version; None: drop it."""
    data = json.loads(record)
    if stream == keys.inbox or data["channel"] != STAFF_CHANNEL:
        return keys.queue(stream, data["channel"], data["conversation_id"]), record
    notice = Outgoing.from_json(record)
    conversation_id = notice.conversation_id
    channel: Any = await call_redis(
        "reading a handoff", redis.hget(keys.legacy_handoff(conversation_id), "channel")
    )
    if not channel:
        return None
    notice = replace(
        notice,
        conversation_id=desk_conversation_id(channel, conversation_id),
        about=(channel, conversation_id),
    )
    return keys.queue(stream, channel, conversation_id), notice.to_json()
