"""The handoff lifecycle: one state machine per conversation, kept in Redis.

    bot ──request──▶ requested ──route──▶ queued ◀──open── after_hours
                         │                  │  ▲               │
                         └──route (closed)──┼──┼──────────────▶┘
                                            │  └─release─┐
                      claim / transfer ─────▼            │
                                         claimed ────────┘ (transfer: claimed ▶ claimed)
    requested | queued | after_hours | claimed ──resolve──▶ resolved ──rate | move on──▶ bot
    requested | queued | after_hours | claimed ──cancel (customer) | idle timeout | reset──▶ bot

While the state is one of `HELD` a person holds the conversation: the bot stays quiet and
what the customer writes goes to the team. `resolved` waits for the customer's rating
(CSAT); any other message, or `RATING_WINDOW_SECONDS`, returns the conversation to the bot.

Storage (keys in `brain.keys`): the hash `handoff:{channel}:{id}` is the conversation's
record (`state`, `version`, `id`, times, `agent`, staff thread); absent means `bot`. A hash
of an earlier version, with no `state`, reads as `queued`; `index_earlier_records` (run by
`deskmate serve` at start) puts those in the queue sets. Every transition is decided by
the pure `decide` on the record as read under `WATCH`, and written with `MULTI`: the new
record with its version one higher, the queue sets, the staff-thread key, the finished
record and a `handoff_state` event in the transcripts stream, all or nothing. A concurrent
transition (two agents pressing claim, two processes, a retried event) makes `EXEC` fail
and the loser decides again on what the winner wrote; a crash before `EXEC` writes nothing.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, get_args

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from brain.keys import CLAIM_SAMPLES, HANDOFF_RECORD_TTL_SECONDS, RedisKeys
from brain.redis_server import RedisUnavailable
from brain.transcript_events import TRANSCRIPTS_MAXLEN, transcript_entry
from brain.types import Channel

# KEYS: the hash as found, its name now (the same, unless found under its name from before
# keys carried the channel), the open and waiting sets. ARGV: the queue member, now. A hash
# with no `state` is made an explicit `queued` record (kept until it ends, like any open
# one) and indexed by its request time; anything else is left alone, so a second run or a
# second process starting together changes nothing.
INDEX_EARLIER = """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
if redis.call('HEXISTS', KEYS[1], 'state') == 1 then return 0 end
if KEYS[1] ~= KEYS[2] then
  if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
  redis.call('RENAME', KEYS[1], KEYS[2])
end
local since = tonumber(redis.call('HGET', KEYS[2], 'since') or '') or tonumber(ARGV[2])
local stamp = string.format('%.3f', since)
redis.call('HSET', KEYS[2], 'state', 'queued', 'version', '0', 'since', stamp)
redis.call('PERSIST', KEYS[2])
redis.call('ZADD', KEYS[3], 'NX', since, ARGV[1])
redis.call('ZADD', KEYS[4], 'NX', since, ARGV[1])
return 1
"""
RATING_WINDOW_SECONDS = 24 * 3600  # how long a resolved handoff waits for its rating
MAX_ATTEMPTS = 50  # optimistic retries under contention before giving up


class State(StrEnum):
    BOT = "bot"
    REQUESTED = "requested"
    QUEUED = "queued"
    AFTER_HOURS = "after_hours"
    CLAIMED = "claimed"
    RESOLVED = "resolved"


HELD = frozenset({State.REQUESTED, State.QUEUED, State.AFTER_HOURS, State.CLAIMED})
WAITING = frozenset({State.REQUESTED, State.QUEUED, State.AFTER_HOURS})


class Event(StrEnum):
    REQUEST = "request"  # the customer is handed off
    ROUTE = "route"  # into the queue, or to wait for opening hours
    OPEN = "open"  # opening hours began
    POSTED = "posted"  # the escalation was posted to the staff channel
    ACTIVITY = "activity"  # someone wrote in the held conversation
    REMIND = "remind"  # the on-call group was reminded of an unclaimed handoff
    CLAIM = "claim"
    RELEASE = "release"
    TRANSFER = "transfer"
    RESOLVE = "resolve"
    CANCEL = "cancel"  # the customer went back to the bot
    TIMEOUT = "timeout"  # claimed, and nobody wrote for the idle time
    RATE = "rate"
    MOVE_ON = "move_on"  # the customer wrote something else instead of rating
    RESET = "reset"


# event -> the states it applies in; the state it leads to is decided in `decide`.
ALLOWED: Mapping[Event, frozenset[State]] = {
    Event.REQUEST: frozenset({State.BOT, State.RESOLVED}),
    Event.ROUTE: frozenset({State.REQUESTED}),
    Event.OPEN: frozenset({State.AFTER_HOURS}),
    Event.POSTED: HELD,
    Event.ACTIVITY: HELD,
    Event.REMIND: WAITING,
    Event.CLAIM: WAITING,
    Event.RELEASE: frozenset({State.CLAIMED}),
    Event.TRANSFER: HELD,
    Event.RESOLVE: HELD,
    Event.CANCEL: HELD,
    Event.TIMEOUT: frozenset({State.CLAIMED}),
    Event.RATE: frozenset({State.RESOLVED}),
    Event.MOVE_ON: frozenset({State.RESOLVED}),
    Event.RESET: frozenset(State) - {State.BOT},
}


@dataclass(frozen=True, slots=True)
class Handoff:
    """A conversation's handoff record as stored (every field a string in the hash)."""

    channel: str
    conversation_id: str
    state: State = State.BOT
    version: int = 0
    id: str = ""
    reason: str = ""
    user: str = ""  # the customer
    since: float = 0.0  # requested
    queued_at: float = 0.0
    claimed_at: float = 0.0
    agent: str = ""  # who holds it now
    first_agent: str = ""  # who claimed it first (time to claim is theirs)
    last_activity: float = 0.0
    reposted: int = 0  # on-call reminders posted
    staff_channel: str = ""
    staff_ts: str = ""
    resolved_at: float = 0.0
    resolved_by: str = ""

    @property
    def member(self) -> str:
        """How the queue sets name the conversation: `{channel}:{id}`."""
        return f"{self.channel}:{self.conversation_id}"

    @property
    def held(self) -> bool:
        return self.state in HELD

    @classmethod
    def from_hash(cls, channel: str, conversation_id: str, raw: Mapping[Any, Any]) -> Handoff:
        """The record in a hash; an empty one is `bot`, one without `state` (written by an
        earlier version) is `queued`."""
        data = {_text(k): _text(v) for k, v in raw.items()}
        if not data:
            return cls(channel, conversation_id)
        kinds = {spec.name: spec.type for spec in fields(cls)}
        values: dict[str, Any] = {}
        for name, text in data.items():
            kind = kinds.get(name)
            if kind is None or name in ("channel", "conversation_id") or text == "":
                continue
            try:
                values[name] = (
                    float(text) if kind == "float" else int(text) if kind == "int" else text
                )
            except ValueError:
                continue
        state = data.get("state", State.QUEUED.value)
        values["state"] = State(state) if state in State._value2member_map_ else State.QUEUED
        if "since" not in values:
            values["since"] = 0.0
        return cls(channel, conversation_id, **values)

    def to_hash(self) -> dict[str, str]:
        data = asdict(self)
        data.pop("conversation_id")
        out = {}
        for name, value in data.items():
            if value in ("", 0, 0.0) and name not in ("state", "version"):
                continue
            out[name] = f"{value:.3f}" if isinstance(value, float) else str(value)
        return out


@dataclass(frozen=True, slots=True)
class Change:
    """What an event asks: `agent` acting (or the customer for `user`), and its details."""

    event: Event
    agent: str = ""
    to_agent: str = ""  # transfer
    reason: str = ""  # request
    user: str = ""  # request
    open_now: bool = True  # route: within business hours
    idle_seconds: float = 0.0  # timeout: only after this much silence
    rating: str = ""  # rate: "up" | "down" | "1".."5"
    staff_channel: str = ""  # posted
    staff_ts: str = ""  # posted
    expect_version: int | None = None  # apply only to this version of the record


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decided event: `after` is the record once applied, `applied` whether it changed
    anything (False: `why` says why not; `after` is the record as it stands)."""

    before: Handoff
    after: Handoff
    applied: bool
    why: str = ""

    @property
    def changed_state(self) -> bool:
        return self.applied and self.before.state != self.after.state


def decide(record: Handoff, change: Change, now: float) -> Outcome:
    """The pure transition function: what `change` does to `record` at `now`."""
    event = change.event

    def refuse(why: str) -> Outcome:
        return Outcome(record, record, False, why)

    if change.expect_version is not None and change.expect_version != record.version:
        return refuse("the handoff changed meanwhile")
    if record.state not in ALLOWED[event]:
        return refuse(f"cannot {event.value} a handoff that is {record.state.value}")
    # A record of an earlier version has no id: it gets one with its first transition.
    bumped = replace(record, version=record.version + 1, id=record.id or uuid.uuid4().hex[:16])
    if event is Event.REQUEST:
        new = Handoff(
            record.channel,
            record.conversation_id,
            State.REQUESTED,
            record.version + 1,
            id=uuid.uuid4().hex[:16],
            reason=change.reason,
            user=change.user,
            since=now,
            last_activity=now,
        )
        return Outcome(record, new, True)
    if event is Event.ROUTE:
        state = State.QUEUED if change.open_now else State.AFTER_HOURS
        return Outcome(record, replace(bumped, state=state, queued_at=now), True)
    if event is Event.OPEN:
        # Queued from now: the wait the on-call reminder measures starts with the hours.
        return Outcome(record, replace(bumped, state=State.QUEUED, queued_at=now), True)
    if event is Event.POSTED:
        if record.staff_ts:
            return refuse("the escalation was posted already")
        posted = replace(bumped, staff_channel=change.staff_channel, staff_ts=change.staff_ts)
        return Outcome(record, posted, True)
    if event is Event.REMIND:
        return Outcome(record, replace(bumped, reposted=record.reposted + 1), True)
    if event is Event.ACTIVITY:
        return Outcome(record, replace(bumped, last_activity=now), True)
    if event is Event.CLAIM:
        return Outcome(record, _claimed(bumped, change.agent, now), True)
    if event is Event.TRANSFER:
        if not change.to_agent:
            return refuse("transfer to whom?")
        if record.state is State.CLAIMED and record.agent == change.to_agent:
            return refuse(f"<@{change.to_agent}> has it already")
        return Outcome(record, _claimed(bumped, change.to_agent, now), True)
    if event is Event.RELEASE:
        released = replace(bumped, state=State.QUEUED, agent="", last_activity=now)
        return Outcome(record, released, True)
    if event is Event.RESOLVE:
        resolved = replace(bumped, state=State.RESOLVED, resolved_at=now, resolved_by=change.agent)
        return Outcome(record, resolved, True)
    if event is Event.TIMEOUT and now - record.last_activity < change.idle_seconds:
        return refuse("not idle long enough")
    # cancel, timeout, rate, move_on, reset: back to the bot
    return Outcome(record, replace(bumped, state=State.BOT), True)


def _claimed(record: Handoff, agent: str, now: float) -> Handoff:
    first = not record.first_agent
    return replace(
        record,
        state=State.CLAIMED,
        agent=agent,
        first_agent=agent if first else record.first_agent,
        claimed_at=now if first else record.claimed_at,
        last_activity=now,
    )


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """An open handoff as `/deskmate queue` lists it."""

    handoff: Handoff
    age_seconds: float


@dataclass
class Handoffs:
    """Reads handoff records and applies transitions atomically (see the module doc)."""

    redis: aioredis.Redis
    prefix: str = "dm:"
    keys: RedisKeys = field(init=False)

    def __post_init__(self) -> None:
        self.keys = RedisKeys(self.prefix)

    async def get(self, channel: str, conversation_id: str) -> Handoff:
        raw = await _call(
            "reading a handoff", self.redis.hgetall(self._key(channel, conversation_id))
        )
        return Handoff.from_hash(channel, conversation_id, raw or {})

    def _key(self, channel: str, conversation_id: str) -> str:
        return self.keys.handoff(channel, conversation_id)

    async def apply(
        self, channel: str, conversation_id: str, change: Change, now: float | None = None
    ) -> Outcome:
        """Decide `change` on the stored record and write the result, atomically."""
        key = self._key(channel, conversation_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for _ in range(MAX_ATTEMPTS):
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hgetall(key)
                        record = Handoff.from_hash(channel, conversation_id, raw or {})
                        at = time.time() if now is None else now
                        outcome = decide(record, change, at)
                        if not outcome.applied:
                            await pipe.unwatch()  # type: ignore[no-untyped-call]
                            return outcome
                        pipe.multi()  # type: ignore[no-untyped-call]
                        self._write(pipe, outcome, change, at)
                        await pipe.execute()
                        return outcome
                    except WatchError:
                        continue
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis failed while applying a handoff event: {exc}") from exc
        raise RedisUnavailable("the handoff kept changing under contention; try again")

    def _write(self, pipe: Any, outcome: Outcome, change: Change, now: float) -> None:
        before, after = outcome.before, outcome.after
        keys = self.keys
        key = self._key(after.channel, after.conversation_id)
        pipe.delete(key)
        if after.state is not State.BOT:
            pipe.hset(key, mapping=after.to_hash())
            if after.state is State.RESOLVED:
                pipe.expire(key, RATING_WINDOW_SECONDS)
        if after.state in WAITING:
            pipe.zadd(keys.handoff_waiting, {after.member: after.since})
        else:
            pipe.zrem(keys.handoff_waiting, after.member)
        if after.held:
            pipe.zadd(keys.handoff_open, {after.member: after.since})
        else:
            pipe.zrem(keys.handoff_open, after.member)
            if before.staff_ts:
                pipe.delete(keys.handoff_thread(before.staff_ts))
        if change.event is Event.POSTED:
            thread = json.dumps([after.channel, after.conversation_id])
            pipe.set(keys.handoff_thread(after.staff_ts), thread, ex=HANDOFF_RECORD_TTL_SECONDS)
        if after.claimed_at and not before.claimed_at and after.since:
            pipe.lpush(keys.handoff_claim_seconds, f"{after.claimed_at - after.since:.3f}")
            pipe.ltrim(keys.handoff_claim_seconds, 0, CLAIM_SAMPLES - 1)
        handoff_id = after.id or before.id
        if before.held and not after.held and handoff_id:
            outcome_name = {Event.RESOLVE: "resolved"}.get(change.event, change.event.value)
            record_key = keys.handoff_record(handoff_id)
            pipe.hset(record_key, mapping={**after.to_hash(), "outcome": outcome_name})
            pipe.hdel(record_key, "state", "version")
            pipe.expire(record_key, HANDOFF_RECORD_TTL_SECONDS)
        if change.event is Event.RATE and handoff_id:
            pipe.hset(keys.handoff_record(handoff_id), "csat", change.rating)
        data: dict[str, Any] = {
            "event": change.event.value,
            "from": before.state.value,
            "to": after.state.value,
            "id": handoff_id,
            "version": after.version,
        }
        if change.agent or after.agent:
            data["agent"] = change.agent or after.agent
        if change.event is Event.REQUEST:
            data["reason"] = after.reason
        if change.event is Event.RATE:
            data["csat"] = change.rating
        if after.claimed_at and not before.claimed_at:
            data["time_to_claim"] = round(after.claimed_at - after.since, 3)
        if change.event is Event.RESOLVE:
            data["time_to_resolve"] = round(now - after.since, 3)
        user = change.agent or after.user or before.user
        if change.event not in (Event.ACTIVITY, Event.POSTED):
            pipe.xadd(
                keys.transcripts,
                transcript_entry(
                    "handoff_state", after.channel, after.conversation_id, user, data, now
                ),
                maxlen=TRANSCRIPTS_MAXLEN,
                approximate=True,
            )

    # -- the queue -------------------------------------------------------------------

    async def position(self, channel: str, conversation_id: str) -> tuple[int, int] | None:
        """(place, of how many) of an unclaimed handoff in the queue, 1 first."""
        member = f"{channel}:{conversation_id}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrank(self.keys.handoff_waiting, member)
            pipe.zcard(self.keys.handoff_waiting)
            rank, size = await _call("reading the queue", pipe.execute())
        return None if rank is None else (int(rank) + 1, int(size))

    async def typical_wait(self) -> float | None:
        """Median seconds from request to claim of the latest handoffs; None if none."""
        raw = await _call(
            "reading claim times", self.redis.lrange(self.keys.handoff_claim_seconds, 0, -1)
        )
        values = [float(_text(v)) for v in raw or []]
        return statistics.median(values) if values else None

    async def open_handoffs(self, now: float | None = None) -> list[QueueEntry]:
        """Every open handoff, oldest first."""
        now = time.time() if now is None else now
        members = await _call(
            "reading open handoffs", self.redis.zrange(self.keys.handoff_open, 0, -1)
        )
        found = []
        for member in members or []:
            channel, _, conversation_id = _text(member).partition(":")
            record = await self.get(channel, conversation_id)
            if record.held:
                found.append(QueueEntry(record, max(0.0, now - record.since)))
        return found

    async def index_earlier_records(self, now: float | None = None) -> int:
        """Index the open handoffs an earlier version wrote (hashes with no `state`, under
        `handoff:{channel}:{id}` or, older still, `handoff:{id}` naming its `channel`) in
        `handoffs:open` / `handoffs:waiting`, so `/deskmate queue`, queue places and the
        desk's checks see them; the number indexed. Run once when a process starts
        (`deskmate serve` does); running it again finds nothing to do."""
        now = time.time() if now is None else now
        script = self.redis.register_script(INDEX_EARLIER)
        pattern = self.keys.handoff_match
        thread_prefix = self.keys.handoff_thread("")
        channel_names = get_args(Channel)
        indexed = 0
        try:
            async for raw_key in self.redis.scan_iter(match=pattern, count=1000):
                key = _text(raw_key)
                if key.startswith(thread_prefix):
                    continue
                rest = key[len(pattern) - 1 :]
                channel, _, conversation_id = rest.partition(":")
                if channel not in channel_names or not conversation_id:
                    # Named before keys carried the channel: the hash names it.
                    channel = _text(await self.redis.hget(key, "channel"))
                    conversation_id = rest
                    if channel not in channel_names:
                        continue
                new_key = self._key(channel, conversation_id)
                done = await script(
                    keys=[key, new_key, self.keys.handoff_open, self.keys.handoff_waiting],
                    args=[f"{channel}:{conversation_id}", f"{now:.3f}"],
                )
                indexed += int(done)
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis failed while indexing earlier handoffs: {exc}") from exc
        return indexed

    async def record(self, handoff_id: str) -> dict[str, str]:
        """A finished handoff's analytics record (empty if unknown or expired)."""
        raw = await _call(
            "reading a handoff record", self.redis.hgetall(self.keys.handoff_record(handoff_id))
        )
        return {_text(k): _text(v) for k, v in (raw or {}).items()}


async def _call(what: str, operation: Any) -> Any:
    try:
        return await operation
    except (RedisError, OSError) as exc:
        raise RedisUnavailable(f"Redis failed while {what}: {exc}") from exc


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
