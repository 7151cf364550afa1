"""Conversation state in Redis: recent history, handoff state and the transcripts stream.

Keys (under the configured prefix): `conv:{id}` list of JSON turns trimmed to N and
expiring after the idle TTL; `handoff:{id}` hash while a human holds the conversation;
`transcripts` stream with every turn, feedback and handoff event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

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
        self.history_turns = history_turns
        self.ttl_seconds = ttl_seconds

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis failed while {what}: {exc}") from exc

    async def history(self, conversation_id: str) -> list[Turn]:
        raw = await self._call(
            "reading history", lambda: self.redis.lrange(self.key("conv", conversation_id), 0, -1)
        )
        return [Turn.from_json(json.loads(item)) for item in raw]

    async def append(self, inbound: Inbound, *turns: Turn) -> None:
        """Append turns to the history (trimmed, TTL refreshed) and to the transcripts."""
        key = self.key("conv", inbound.conversation_id)

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                for turn in turns:
                    pipe.rpush(key, json.dumps(turn.to_json(), ensure_ascii=False))
                    pipe.xadd(
                        self.key("transcripts"),
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
                self.key("transcripts"),
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
        await self._call(
            "resetting the conversation",
            lambda: self.redis.delete(
                self.key("conv", conversation_id), self.key("handoff", conversation_id)
            ),
        )

    async def start_handoff(self, conversation_id: str, reason: str) -> None:
        key = self.key("handoff", conversation_id)

        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"reason": reason, "since": f"{time.time():.3f}"})
                pipe.expire(key, self.ttl_seconds)
                await pipe.execute()

        await self._call("starting a handoff", write)

    async def handoff(self, conversation_id: str) -> dict[str, str] | None:
        """The handoff record if a human holds the conversation, else None."""
        state = await self._call(
            "reading handoff state",
            lambda: self.redis.hgetall(self.key("handoff", conversation_id)),
        )
        return {str(k): str(v) for k, v in state.items()} if state else None

    async def end_handoff(self, conversation_id: str) -> None:
        await self._call(
            "ending a handoff",
            lambda: self.redis.delete(self.key("handoff", conversation_id)),
        )
