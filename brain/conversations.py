"""Conversation state in Redis: recent history, the handoff record and the transcripts stream.

A conversation is its channel and its id (ids are only unique within a channel). Keys
(under the configured prefix, named in `brain.keys`): `conv:{channel}:{id}` list of JSON
turns trimmed to N and expiring after the idle TTL; `transcripts` stream with every turn,
feedback and handoff event. The handoff is the state machine of `brain.handoff.machine`
(`handoffs`): the hash `handoff:{channel}:{id}` holds its record (`state` requested,
queued, after_hours, claimed or resolved, a `version`, times, agent, staff thread) and is
absent while the bot has the conversation; `handoff:thread:{staff thread ts}` names the
conversation an escalation posted to the support team belongs to. This store starts a
handoff (`start_handoff`), attaches its staff thread and forgets it on `/reset`, always
through the machine's transitions.

Upgrading: earlier versions named the first key and the handoff `conv:{id}` and
`handoff:{id}`. The first time a store touches a conversation, before anything else, it
moves such keys to their new names (`UPGRADE`), so a deployment's conversations carry on;
the old names are gone once every conversation of the old version has been touched or has
expired. (`deskmate serve` also indexes earlier versions' open handoffs in the queue when
it starts: `Handoffs.index_earlier_records`.)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, get_args

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from brain.handoff.machine import Change, Event, Handoff, Handoffs, Outcome
from brain.keys import RedisKeys
from brain.redis_server import RedisUnavailable
from brain.transcript_events import TRANSCRIPTS_MAXLEN, transcript_entry
from brain.types import Channel, Feedback, Inbound, Turn

T = TypeVar("T")
CHANNELS: tuple[str, ...] = get_args(Channel)
UPGRADED_MEMORY = 50_000  # conversations remembered as upgraded, per store

# KEYS: pairs (key, its name before it carried the channel). A key found only under its
# old name is renamed (its TTL goes with it).
UPGRADE = """
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 0 and redis.call('EXISTS', KEYS[i + 1]) == 1 then
    redis.call('RENAME', KEYS[i + 1], KEYS[i])
  end
end
return 0
"""

# KEYS: history list, transcripts stream. ARGV: role and message id of the first turn
# (id '' = no check), turns kept, idle TTL, transcripts cap, then for each turn its JSON
# and its transcripts entry as a JSON list of [field, value]. Turns of a message already
# in the history are not written again: a worker paused or killed after saving them
# and before finishing the message, whose message another worker then answered, would
# otherwise record the customer's turn twice.
APPEND = """
if ARGV[2] ~= '' then
  for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local ok, turn = pcall(cjson.decode, item)
    if ok and turn['role'] == ARGV[1] and turn['message_id'] == ARGV[2] then return 0 end
  end
end
for i = 6, #ARGV, 2 do
  redis.call('RPUSH', KEYS[1], ARGV[i])
  local entry = {}
  for _, pair in ipairs(cjson.decode(ARGV[i + 1])) do
    entry[#entry + 1] = pair[1]
    entry[#entry + 1] = pair[2]
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(entry))
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


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
        self._upgrade_script = redis.register_script(UPGRADE)
        self._append_script = redis.register_script(APPEND)
        self._upgraded: set[tuple[str, str]] = set()
        self.handoffs = Handoffs(redis, prefix)

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis failed while {what}: {exc}") from exc

    async def _upgrade(self, channel: str, conversation_id: str) -> None:
        """Move the conversation's keys of an earlier version to their new names, the first
        time this store touches it: nothing writes the old names any more, so once moved
        (or found absent) they stay so."""
        conversation = (channel, conversation_id)
        if conversation in self._upgraded:
            return
        keys = self.keys
        await self._call(
            "moving keys of an earlier version",
            lambda: self._upgrade_script(
                keys=[
                    keys.conversation(channel, conversation_id),
                    keys.legacy_conversation(conversation_id),
                    keys.handoff(channel, conversation_id),
                    keys.legacy_handoff(conversation_id),
                ]
            ),
        )
        if len(self._upgraded) >= UPGRADED_MEMORY:
            self._upgraded.clear()  # forgotten ones are only checked again
        self._upgraded.add(conversation)

    async def history(self, channel: str, conversation_id: str) -> list[Turn]:
        await self._upgrade(channel, conversation_id)
        raw = await self._call(
            "reading history",
            lambda: self.redis.lrange(self.keys.conversation(channel, conversation_id), 0, -1),
        )
        return [Turn.from_json(json.loads(item)) for item in raw]

    async def append(self, inbound: Inbound, *turns: Turn) -> None:
        """Append turns to the history (trimmed, TTL refreshed) and to the transcripts,
        once: turns whose first one (role and message id) is in the history already are
        not written again."""
        await self._upgrade(inbound.channel, inbound.conversation_id)
        if not turns:
            return
        key = self.keys.conversation(inbound.channel, inbound.conversation_id)
        args: list[Any] = [
            turns[0].role,
            turns[0].message_id,
            self.history_turns,
            self.ttl_seconds,
            TRANSCRIPTS_MAXLEN,
        ]
        for turn in turns:
            entry = self._event("turn", inbound, {"turn": turn.to_json()})
            args.append(json.dumps(turn.to_json(), ensure_ascii=False))
            args.append(
                json.dumps([[str(k), str(v)] for k, v in entry.items()], ensure_ascii=False)
            )
        await self._call(
            "saving the conversation",
            lambda: self._append_script(keys=[key, self.keys.transcripts], args=args),
        )

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
        return transcript_entry(
            kind, inbound.channel, inbound.conversation_id, inbound.user_id, data
        )

    async def reset(self, channel: str, conversation_id: str) -> None:
        """Forget the conversation: history, handoff and its staff thread."""
        await self._forget("resetting the conversation", channel, conversation_id, history=True)

    async def start_handoff(
        self,
        channel: str,
        conversation_id: str,
        reason: str,
        *,
        user_id: str = "",
        open_now: bool = True,
    ) -> Outcome:
        """Hand the conversation to a person (`requested`, then `queued`, or `after_hours`
        when the team is away); `user_id` says who the customer is. Not applied (see the
        outcome) when a person holds it already."""
        await self._upgrade(channel, conversation_id)
        requested = await self.handoffs.apply(
            channel, conversation_id, Change(Event.REQUEST, reason=reason, user=user_id)
        )
        if not requested.applied:
            return requested
        return await self.handoffs.apply(
            channel,
            conversation_id,
            Change(Event.ROUTE, open_now=open_now, expect_version=requested.after.version),
        )

    async def attach_staff_thread(
        self, channel: str, conversation_id: str, staff_channel: str, ts: str
    ) -> bool:
        """Remember the staff thread a handoff was posted as (both ways round); False when
        the handoff ended before (or had a thread already)."""
        await self._upgrade(channel, conversation_id)
        outcome = await self.handoffs.apply(
            channel,
            conversation_id,
            Change(Event.POSTED, staff_channel=staff_channel, staff_ts=ts),
        )
        return outcome.applied

    async def conversation_of_thread(self, ts: str) -> tuple[str, str] | None:
        """(channel, id) of the handed-off conversation whose staff thread starts at `ts`."""
        value = await self._call(
            "reading a staff thread", lambda: self.redis.get(self.keys.handoff_thread(ts))
        )
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        if text.startswith("["):
            channel, conversation_id = json.loads(text)
            return str(channel), str(conversation_id)
        return await self._legacy_thread(text, ts)

    async def _legacy_thread(self, conversation_id: str, ts: str) -> tuple[str, str] | None:
        """An earlier version remembered a staff thread as the bare conversation id: the
        channel is that of the handoff (under its old or new name) posted as `ts`."""
        candidates = [(self.keys.legacy_handoff(conversation_id), "")]
        candidates += [(self.keys.handoff(c, conversation_id), c) for c in CHANNELS]

        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, _ in candidates:
                    pipe.hmget(key, ["channel", "staff_ts"])
                return list(await pipe.execute())

        found = await self._call("reading a staff thread", read)
        for (_, channel), (recorded_channel, staff_ts) in zip(candidates, found, strict=True):
            if staff_ts == ts and (channel or recorded_channel):
                return channel or recorded_channel, conversation_id
        return None

    async def handoff(self, channel: str, conversation_id: str) -> dict[str, str] | None:
        """The handoff record's fields if a person holds the conversation, else None."""
        record = await self.handoff_record(channel, conversation_id)
        return record.to_hash() if record.held else None

    async def handoff_record(self, channel: str, conversation_id: str) -> Handoff:
        """The conversation's handoff record (state `bot` when there is none)."""
        await self._upgrade(channel, conversation_id)
        return await self.handoffs.get(channel, conversation_id)

    async def _forget(
        self, what: str, channel: str, conversation_id: str, *, history: bool
    ) -> None:
        """Delete the handoff (and the history), under their new and old names, and the
        staff thread that points at them."""
        state = await self.handoff(channel, conversation_id)  # moves the old names first
        # Through the state machine first: the queue, the record and the transcripts.
        await self.handoffs.apply(channel, conversation_id, Change(Event.RESET))
        # The old names too: one left beside a new one would otherwise move in later.
        keys = [
            self.keys.handoff(channel, conversation_id),
            self.keys.legacy_handoff(conversation_id),
        ]
        if history:
            keys += [
                self.keys.conversation(channel, conversation_id),
                self.keys.legacy_conversation(conversation_id),
            ]
        if state and state.get("staff_ts"):
            keys.append(self.keys.handoff_thread(state["staff_ts"]))
        await self._call(what, lambda: self.redis.delete(*keys))
