"""Conversation state in Redis: recent history, handoff state and the transcripts stream.

Keys (under the configured prefix): `conv:{id}` list of JSON turns trimmed to N and
expiring after the idle TTL; `handoff:{id}` hash while a human holds the conversation;
`transcripts` stream with every turn, feedback and handoff event. A handoff posted to the
support team's channel also has `handoff:thread:{staff thread ts}` naming its conversation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from brain.keys import RedisKeys
from brain.redis_server import RedisUnavailable
from brain.types import Feedback, Inbound, Turn

T = TypeVar("T")
TRANSCRIPTS_MAXLEN = 5_000_000  # approximate cap; export before it is reached


class ConversationStore:
    """Reads and writes conversation state. Redis failures become `RedisUnavailable`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "dm:",
        history_turns: int = 20,
        ttl_seconds: int = 7 * 24 * 3600,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = RedisKeys(prefix)
        self.history_turns = history_turns
        self.ttl_seconds = ttl_seconds

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis failed while {what}: {exc}") from exc

    async def history(self, conversation_id: str) -> list[Turn]:
        raw = await self._call(
            "reading history",
            lambda: self.redis.lrange(self.keys.conversation(conversation_id), 0, -1),
        )
        return [Turn.from_json(json.loads(item)) for item in raw]

    async def append(self, inbound: Inbound, *turns: Turn) -> None:
        """Append turns to the history (trimmed, TTL refreshed) and to the transcripts."""
        key = self.keys.conversation(inbound.conversation_id)

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                for turn in turns:
                    pipe.rpush(key, json.dumps(turn.to_json(), ensure_ascii=False))
                    pipe.xadd(
                        self.keys.transcripts,
                        self._event("turn", inbound, {"turn": turn.to_json()}),
                        maxlen=TRANSCRIPTS_MAXLEN,
                        approximate=True,
                    )
                pipe.ltrim(key, -self.history_turns, -1)
                pipe.expire(key, self.ttl_seconds)
                await pipe.execute()

        await self._call("saving the conversation", write)

    async def record_event(self, kind: str, inbound: Inbound, data: Mapping[str, Any]) -> None:
        """Add a non-turn event (feedback, handoff, reset) to the transcripts stream."""
        await self._call(
            f"recording a {kind} event",
            lambda: self.redis.xadd(
                self.keys.transcripts,
                self._event(kind, inbound, data),
                maxlen=TRANSCRIPTS_MAXLEN,
                approximate=True,
            ),
        )

    async def record_feedback(self, feedback: Feedback) -> None:
        """A 👍/👎 on a bot message, as a `feedback` event in the transcripts stream."""
        inbound = Inbound(
            feedback.channel,
            feedback.conversation_id,
            feedback.user_id,
            feedback.message_id,
            "",
            feedback.time,
        )
        await self.record_event(
            "feedback", inbound, {"message_id": feedback.message_id, "rating": feedback.rating}
        )

    @staticmethod
    def _event(kind: str, inbound: Inbound, data: Mapping[str, Any]) -> dict[Any, Any]:
        return {
            "type": kind,
            "channel": inbound.channel,
            "conversation": inbound.conversation_id,
            "user": inbound.user_id,
            "time": f"{time.time():.3f}",
            "data": json.dumps(data, ensure_ascii=False),
        }

    async def reset(self, conversation_id: str) -> None:
        thread = await self._staff_thread_key(conversation_id)
        await self._call(
            "resetting the conversation",
            lambda: self.redis.delete(
                self.keys.conversation(conversation_id), self.keys.handoff(conversation_id), *thread
            ),
        )

    async def start_handoff(
        self, conversation_id: str, reason: str, *, channel: str = "", user_id: str = ""
    ) -> None:
        """Hand the conversation to a person; `channel` and `user_id` say whose it is."""
        key = self.keys.handoff(conversation_id)
        fields: dict[Any, Any] = {"reason": reason, "since": f"{time.time():.3f}"}
        fields.update({name: v for name, v in (("channel", channel), ("user", user_id)) if v})

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, self.ttl_seconds)
                await pipe.execute()

        await self._call("starting a handoff", write)

    async def attach_staff_thread(self, conversation_id: str, staff_channel: str, ts: str) -> None:
        """Remember the staff thread a handoff was posted as (both ways round)."""

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    self.keys.handoff(conversation_id),
                    mapping={"staff_channel": staff_channel, "staff_ts": ts},
                )
                pipe.set(self.keys.handoff_thread(ts), conversation_id, ex=self.ttl_seconds)
                await pipe.execute()

        await self._call("remembering a staff thread", write)

    async def conversation_of_thread(self, ts: str) -> str | None:
        """The handed-off conversation whose staff thread starts at `ts`, if any."""
        value = await self._call(
            "reading a staff thread", lambda: self.redis.get(self.keys.handoff_thread(ts))
        )
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def _staff_thread_key(self, conversation_id: str) -> list[str]:
        ts = await self._call(
            "reading handoff state",
            lambda: self.redis.hget(self.keys.handoff(conversation_id), "staff_ts"),
        )
        if not ts:
            return []
        return [self.keys.handoff_thread(ts.decode() if isinstance(ts, bytes) else str(ts))]

    async def handoff(self, conversation_id: str) -> dict[str, str] | None:
        """The handoff record if a human holds the conversation, else None."""
        state = await self._call(
            "reading handoff state",
            lambda: self.redis.hgetall(self.keys.handoff(conversation_id)),
        )
        return {str(k): str(v) for k, v in state.items()} if state else None

    async def end_handoff(self, conversation_id: str) -> None:
        thread = await self._staff_thread_key(conversation_id)
        await self._call(
            "ending a handoff",
            lambda: self.redis.delete(self.keys.handoff(conversation_id), *thread),
        )
