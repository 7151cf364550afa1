"""The durable message flow on Redis: intake, stream records, the exactly-once step, status.

Keys under the configured prefix (DESIGN.md, "Message flow"; names in `brain.keys`):

- `seen:{channel}:{conversation}:{message_id}` dedupe marker, 24 h.
- `inbox` / `outbox` streams with consumer groups `brain` / `senders`.
- `inbox:{channel}:{conversation}` / `outbox:{channel}:{conversation}` lists of the stream
  entry ids of one conversation not yet answered / delivered, oldest first. They keep a
  conversation's turns in order across any number of workers, and they are the
  exactly-once gate: an entry is finished by whoever removes its id from the list, in one
  atomic script with the acknowledgement and the write of the next record (see `FINISH`).
- `lock:{channel}:{conversation}` / `sendlock:{channel}:{conversation}`: one worker / sender
  per conversation.
- `process:{name}` heartbeats of running `deskmate serve` processes (expire when one dies).
- `model:active` the model version replicas serve.

Scripts touch several keys at once; on Redis Cluster the prefix carries a hash tag
(`{dm}:`, see `brain.keys.cluster_prefix`) so they share a slot.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from brain.keys import SEEN_TTL_SECONDS, RedisKeys
from brain.metrics import MESSAGES_IN
from brain.redis_server import RedisUnavailable
from brain.types import Inbound, QuickReply, Reply, Source

T = TypeVar("T")
INBOX_GROUP = "brain"
OUTBOX_GROUP = "senders"

# KEYS: seen marker, inbox stream, conversation's inbox list. ARGV: seen TTL, record.
# Dedupe, durability and ordering in one step: a message is either marked seen *and*
# queued, or neither (a crash between the two would otherwise lose it to the dedupe).
SUBMIT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return false end
local id = redis.call('XADD', KEYS[2], '*', 'data', ARGV[2])
redis.call('RPUSH', KEYS[3], id)
return id
"""

# KEYS: stream, conversation's list for it, next stream, conversation's list for that,
# and optionally the entry's delivery record (senders). ARGV: group, entry id, next
# record ('' = nothing to pass on), further records.
# Whoever removes the id from the conversation's list finishes the entry; a second
# attempt (a reclaimed entry answered meanwhile, a worker thought dead) returns false
# and writes nothing. Acknowledge, delete and pass on happen together or not at all.
# Several records (a reply and a note for the support team) are passed on in order.
FINISH = """
if KEYS[5] then redis.call('DEL', KEYS[5]) end
if redis.call('LREM', KEYS[2], 1, ARGV[2]) == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return false
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[3] == '' then return 'done' end
local id
for i = 3, #ARGV do
  id = redis.call('XADD', KEYS[3], '*', 'data', ARGV[i])
  redis.call('RPUSH', KEYS[4], id)
end
return id
"""


async def call_redis(what: str, operation: Awaitable[T]) -> T:
    """Await a Redis command; any Redis or socket failure becomes `RedisUnavailable`."""
    try:
        return await operation
    except (RedisError, OSError) as exc:
        raise RedisUnavailable(f"Redis failed while {what}: {exc}") from exc


# Records: one JSON document per stream entry, in field `data`.


def inbound_to_json(inbound: Inbound) -> str:
    """Every field of the message, so fields added to `Inbound` travel through the inbox."""
    return json.dumps(dataclasses.asdict(inbound), ensure_ascii=False)


def inbound_from_json(text: str) -> Inbound:
    data = json.loads(text)
    known = {spec.name for spec in dataclasses.fields(Inbound)}
    return Inbound(**{name: value for name, value in data.items() if name in known})


def reply_to_dict(reply: Reply) -> dict[str, Any]:
    """A reply as plain JSON-able data (also the body of the http channel's callbacks)."""
    return {
        "text": reply.text,
        "action": reply.action,
        "sources": [
            {"id": s.id, "title": s.title, "score": s.score, "url": s.url} for s in reply.sources
        ],
        "confidence": reply.confidence,
        "model_version": reply.model_version,
        "notice": reply.notice,
        "in_reply_to": reply.in_reply_to,
        "quick_replies": [[q.label, q.text] for q in reply.quick_replies],
    }


def reply_from_dict(data: dict[str, Any]) -> Reply:
    return Reply(
        text=data["text"],
        action=data["action"],
        sources=tuple(
            Source(s["id"], s["title"], float(s["score"]), s.get("url"))
            for s in data.get("sources", ())
        ),
        confidence=float(data.get("confidence", 0.0)),
        model_version=data.get("model_version", ""),
        notice=data.get("notice", ""),
        in_reply_to=data.get("in_reply_to", ""),
        quick_replies=tuple(
            QuickReply(str(label), str(text)) for label, text in data.get("quick_replies", ())
        ),
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An outbox record: a reply and where it goes, in the delivering adapter's terms.
    `received` is the inbound's time. `about` is the customer's conversation (channel, id)
    when the record goes elsewhere (a staff notice): it is ordered with that
    conversation's replies."""

    channel: str
    conversation_id: str
    reply: Reply
    received: float = 0.0
    about: tuple[str, str] | None = None

    @property
    def conversation(self) -> tuple[str, str]:
        """(channel, id) of the conversation the record belongs to: what orders and locks it."""
        return self.about or (self.channel, self.conversation_id)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "channel": self.channel,
            "conversation_id": self.conversation_id,
            "reply": reply_to_dict(self.reply),
            "received": self.received,
        }
        if self.about is not None:
            data["about"] = list(self.about)
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Outgoing:
        data = json.loads(text)
        about = data.get("about")
        return cls(
            data["channel"],
            data["conversation_id"],
            reply_from_dict(data["reply"]),
            float(data.get("received", 0.0)),
            (str(about[0]), str(about[1])) if about else None,
        )


class Intake:
    """Makes inbound messages durable before the platform is acknowledged."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys | None = None) -> None:
        self.redis = redis
        self.keys = keys or RedisKeys()
        self._submit = redis.register_script(SUBMIT)

    async def submit(self, inbound: Inbound) -> bool:
        """Queue `inbound` once: True if queued, False for a repeat of a message already seen.

        Raises `RedisUnavailable` when Redis cannot take it; the adapter must then not
        acknowledge the platform (error status, offset not advanced), so it is sent again.
        """
        keys = self.keys
        entry_id = await call_redis(
            "queueing an inbound message",
            self._submit(
                keys=[
                    keys.seen(inbound.channel, inbound.conversation_id, inbound.message_id),
                    keys.inbox,
                    keys.queue(keys.inbox, inbound.channel, inbound.conversation_id),
                ],
                args=[SEEN_TTL_SECONDS, inbound_to_json(inbound)],
            ),
        )
        if entry_id is None:
            return False
        MESSAGES_IN.labels(channel=inbound.channel).inc()
        return True

    async def handler(self, inbound: Inbound) -> None:
        """`submit` as an adapter `Handler` (adapters need not tell repeats apart)."""
        await self.submit(inbound)


def entry_age(entry_id: str, now: float | None = None) -> float:
    """Seconds since a stream entry was added (its id starts with the milliseconds)."""
    millis = int(entry_id.split("-", 1)[0])
    return max(0.0, (time.time() if now is None else now) - millis / 1000)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    name: str
    length: int  # entries not finished yet: waiting plus pending
    pending: int  # handed to a consumer, not finished
    oldest_age: float | None  # seconds since the oldest unfinished entry arrived


@dataclass(frozen=True, slots=True)
class FlowStatus:
    """What `deskmate status` shows."""

    streams: tuple[StreamStatus, ...]
    processes: tuple[dict[str, Any], ...]
    model_version: str | None

    @property
    def workers(self) -> int:
        return sum(int(p.get("workers", 0)) for p in self.processes)

    @property
    def senders(self) -> int:
        return sum(int(p.get("senders", 0)) for p in self.processes)


async def _stream_status(redis: aioredis.Redis, name: str, stream: str, group: str) -> StreamStatus:
    length = int(await redis.xlen(stream))
    pending = 0
    if length:
        try:
            summary = await redis.xpending(stream, group)
            pending = int(summary["pending"])
        except RedisError:  # no group yet: nobody consumed this stream
            pending = 0
    oldest: Any = await redis.xrange(stream, count=1)
    age = entry_age(str(oldest[0][0])) if oldest else None
    return StreamStatus(name, length, pending, age)


async def flow_status(redis: aioredis.Redis, keys: RedisKeys) -> FlowStatus:
    """Queue depths, pending entries, their age, live processes and the active model."""

    async def read() -> FlowStatus:
        streams = (
            await _stream_status(redis, "inbox", keys.inbox, INBOX_GROUP),
            await _stream_status(redis, "outbox", keys.outbox, OUTBOX_GROUP),
        )
        processes = []
        async for key in redis.scan_iter(match=keys.process("*"), count=200):
            raw = await redis.get(key)
            if raw:
                processes.append(json.loads(raw))
        model: str | None = await redis.get(keys.model_active)  # type: ignore[assignment]
        processes.sort(key=lambda p: str(p.get("name", "")))
        return FlowStatus(streams, tuple(processes), model)

    return await call_redis("reading the flow status", read())
