"""Erasing one customer's data on request (GDPR art. 17): `deskmate forget`.

A customer is named by a conversation (`--conversation`: a Telegram chat, a Slack
channel or thread, an http conversation) or by their user id on a channel (`--user`:
every conversation they wrote in is erased whole, a support conversation being about the
customer who asked). For each conversation this deletes, under every name deskmate
has used for it (`brain.keys`): the history, the handoff record and its staff-thread
pointer and queue places, the finished handoff records, dedupe markers, unfinished
messages and replies (inbox/outbox entries and their queue lists), Slack placeholders and
Telegram typing marks, the content-gap questions and the report's open fold state; and
from the `transcripts` and `undelivered` streams every entry of the conversation (and,
with a user, every entry naming the user). Day counters hold no personal data and stay.

Not in Redis, so not erased here: files exported with `deskmate transcripts export`,
training sets and models trained on them, FAQ entries approved from content gaps, and
the platforms' own copies (Telegram, Slack).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from brain.flow.stream import INBOX_GROUP, OUTBOX_GROUP
from brain.keys import RedisKeys

SCAN_BATCH = 1000
_GLOB = re.compile(r"([*?\[\]\\])")


def _glob_escape(text: str) -> str:
    return _GLOB.sub(r"\\\1", text)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Erasure:
    """What was (or, in a dry run, would be) erased."""

    conversations: list[tuple[str, str]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    stream_entries: dict[str, int] = field(default_factory=dict)
    gaps: int = 0

    def describe(self) -> str:
        lines = [f"conversations: {len(self.conversations)}"]
        lines += [f"  {channel} {conversation}" for channel, conversation in self.conversations]
        lines.append(f"keys: {len(self.keys)}")
        for stream, count in self.stream_entries.items():
            lines.append(f"{stream} entries: {count}")
        lines.append(f"content-gap questions: {self.gaps}")
        return "\n".join(lines)


class Eraser:
    """Finds and deletes one customer's data in Redis."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def forget(
        self,
        channel: str,
        *,
        conversation: str | None = None,
        user: str | None = None,
        dry_run: bool = False,
    ) -> Erasure:
        """Erase the conversation, or every conversation of the user, on `channel`."""
        if not conversation and not user:
            raise ValueError("name a conversation or a user")
        erasure = Erasure()
        conversations: set[str] = {conversation} if conversation else set()
        if user:
            conversations |= await self._conversations_of(channel, user)
        erasure.conversations = sorted((channel, c) for c in conversations)

        def matches(fields: Mapping[str, str]) -> bool:
            if fields.get("channel") != channel:
                return False
            return fields.get("conversation") in conversations or (
                bool(user) and fields.get("user") == user
            )

        handoff_ids: set[str] = set()
        for stream in (self.keys.transcripts, self.keys.undelivered):
            ids = await self._entries(stream, matches, handoff_ids)
            erasure.stream_entries[stream] = len(ids)
            if ids and not dry_run:
                for start in range(0, len(ids), SCAN_BATCH):
                    await self.redis.xdel(stream, *ids[start : start + SCAN_BATCH])
        for conversation_id in sorted(conversations):
            erasure.keys += await self._conversation(channel, conversation_id, handoff_ids, dry_run)
            erasure.gaps += await self._gaps(channel, conversation_id, dry_run)
        erasure.keys += [self.keys.handoff_record(i) for i in sorted(handoff_ids)]
        if not dry_run:
            for handoff_id in handoff_ids:
                await self.redis.delete(self.keys.handoff_record(handoff_id))
        return erasure

    async def _conversations_of(self, channel: str, user: str) -> set[str]:
        """Conversations on `channel` the user wrote in: from the transcripts and from the
        histories (which may outlive trimmed transcripts)."""
        found: set[str] = set()

        def by_user(fields: Mapping[str, str]) -> bool:
            if fields.get("channel") == channel and fields.get("user") == user:
                found.add(fields.get("conversation", ""))
            return False

        await self._entries(self.keys.transcripts, by_user, set())
        prefix = self.keys.conversation(channel, "")
        async for key in self.redis.scan_iter(match=_glob_escape(prefix) + "*", count=SCAN_BATCH):
            name = _text(key)
            for raw in await self.redis.lrange(name, 0, -1):
                if json.loads(raw).get("user_id") == user:
                    found.add(name.removeprefix(prefix))
                    break
        found.discard("")
        return found

    async def _entries(
        self, stream: str, matches: Callable[[Mapping[str, str]], bool], handoff_ids: set[str]
    ) -> list[str]:
        """Ids of the stream's entries that match; handoff ids they mention are collected."""
        ids: list[str] = []
        start = "-"
        while True:
            chunk = await self.redis.xrange(stream, min=start, max="+", count=SCAN_BATCH) or []
            for entry_id, raw in chunk:
                fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
                if matches(fields):
                    ids.append(_text(entry_id))
                    if fields.get("type") == "handoff_state":
                        handoff_id = _handoff_id(fields.get("data", ""))
                        if handoff_id:
                            handoff_ids.add(handoff_id)
            if len(chunk) < SCAN_BATCH:
                return ids
            start = "(" + _text(chunk[-1][0])

    async def _conversation(
        self, channel: str, conversation: str, handoff_ids: set[str], dry_run: bool
    ) -> list[str]:
        keys = self.keys
        record = {
            _text(k): _text(v)
            for k, v in (await self.redis.hgetall(keys.handoff(channel, conversation))).items()
        }
        if record.get("id"):
            handoff_ids.add(record["id"])
        names = [
            keys.conversation(channel, conversation),
            keys.legacy_conversation(conversation),
            keys.handoff(channel, conversation),
            keys.legacy_handoff(conversation),
            keys.slack_placeholder(conversation),
            keys.telegram_typing(conversation),
        ]
        if record.get("staff_ts"):
            names.append(keys.handoff_thread(record["staff_ts"]))
        queued: dict[str, list[str]] = {}
        for stream in (keys.inbox, keys.outbox):
            for name in (
                keys.queue(stream, channel, conversation),
                keys.legacy_queue(stream, conversation),
            ):
                queued[name] = [_text(i) for i in await self.redis.lrange(name, 0, -1)]
                names.append(name)
        seen = keys.seen(channel, _glob_escape(conversation), "*")
        names += [_text(k) async for k in self.redis.scan_iter(match=seen, count=SCAN_BATCH)]
        partial = keys.partial(channel, _glob_escape(conversation), "*")  # answers being shown
        names += [_text(k) async for k in self.redis.scan_iter(match=partial, count=SCAN_BATCH)]
        present = [name for name in names if await self.redis.exists(name)]
        member = f"{channel}:{conversation}"
        if not dry_run:
            async with self.redis.pipeline(transaction=True) as pipe:
                for stream, group in ((keys.inbox, INBOX_GROUP), (keys.outbox, OUTBOX_GROUP)):
                    for name, ids in queued.items():
                        if name.startswith(stream + ":") and ids:
                            pipe.xack(stream, group, *ids)  # no consumer takes them up again
                            pipe.xdel(stream, *ids)
                if present:
                    pipe.delete(*present)
                pipe.zrem(keys.handoff_open, member)
                pipe.zrem(keys.handoff_waiting, member)
                pipe.hdel(keys.stats_open, member)
                await pipe.execute()
        return present

    async def _gaps(self, channel: str, conversation: str, dry_run: bool) -> int:
        stale = []
        for raw in await self.redis.lrange(self.keys.stats_gaps, 0, -1):
            gap: dict[str, Any] = json.loads(raw)
            if gap.get("channel") == channel and gap.get("conversation") == conversation:
                stale.append(raw)
        if stale and not dry_run:
            async with self.redis.pipeline(transaction=False) as pipe:
                for raw in stale:
                    pipe.lrem(self.keys.stats_gaps, 1, _text(raw))
                await pipe.execute()
        return len(stale)


def _handoff_id(data: str) -> str:
    try:
        value = json.loads(data)
    except ValueError:
        return ""
    return str(value.get("id") or "") if isinstance(value, dict) else ""
