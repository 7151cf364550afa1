"""Day counters folded incrementally from the transcripts stream.

The dashboard and `deskmate report` must not scan every conversation on each request. A
fold reads only the transcripts entries added since its cursor, keeps the conversations
still going in one Redis hash, and adds what it learnt to one hash of counters per UTC day;
the cursor, the counters and the open conversations are written in one transaction, so a
crash folds nothing twice. One process folds at a time (a short Redis lock).

A conversation is a channel and id from its first turn until a `/reset` or
`SESSION_GAP_SECONDS` of silence; it is counted on the day it started. It is **resolved by
the bot** when the bot answered at least once, nobody handed it to a person, no answer was
rated 👎, and the customer did not ask the same thing again (an answer citing the same
FAQ entry as one given less than `resolved_window` seconds earlier).

Durations (time to first reply, to claim, to resolve) are counted in logarithmic buckets
5 % wide, so a median over any range of days is read from a few hundred counters.

Mood: each customer message the mood reader read counts under its label (`neutral` when it
expresses no emotion) on the day it was sent, with its sentiment summed in thousandths. A
message **reads angry** when its anger score is at least `ANGRY_SCORE` (more likely angry
than not); a conversation with one such message counts as angry. Handoffs count by reason
(`handoff_reason_kind`), so anger handoffs stand beside the questions the FAQ missed.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from brain.keys import RedisKeys
from brain.policy import ANGRY_CUSTOMER, NOT_COVERED, is_anger_reason
from brain.types import NEUTRAL_MOOD

SESSION_GAP_SECONDS = 30 * 60  # silence after which a conversation counts as finished
GAPS_KEPT = 20_000  # latest unanswered questions kept for the content-gap report
FOLD_BATCH = 2_000  # transcripts entries read per round trip
LOCK_SECONDS = 120
BUCKET_BASE = 1.05  # duration buckets: 5 % wide, from 10 ms
BUCKET_FLOOR = 0.01
NO_ANSWER_REASONS = (NOT_COVERED, "the matching FAQ entry has no answer on file")
ANGRY_SCORE = 0.5  # a message whose anger score is at least this reads angry


def handoff_reason_kind(reason: str) -> str:
    """The kind of a handoff reason, for counting: `angry customer`, `not covered` or the
    reason up to its first colon (reasons are the product's own words, never the
    customer's; figures after a colon are left out so that kinds add up)."""
    if is_anger_reason(reason):
        return ANGRY_CUSTOMER
    if reason in NO_ANSWER_REASONS:
        return "not covered"
    return reason.partition(":")[0].strip()[:60] or "unknown"


def day_of(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d")


def bucket_of(seconds: float) -> int:
    """The duration bucket of `seconds` (0 for anything up to 10 ms)."""
    return max(0, int(math.log(max(seconds, BUCKET_FLOOR) / BUCKET_FLOOR, BUCKET_BASE)))


def bucket_value(bucket: int) -> float:
    """The middle of a duration bucket, in seconds."""
    return float(BUCKET_FLOOR * BUCKET_BASE ** (bucket + 0.5))


@dataclass(slots=True)
class OpenConversation:
    """What the fold remembers of a conversation still going."""

    channel: str
    day: str
    start: float
    last: float
    first_reply: bool = False
    answers: int = 0
    clarifications: int = 0
    handed_off: bool = False
    rated_down: bool = False
    repeated: bool = False
    cited: list[tuple[float, str]] = field(default_factory=list)  # (time, first source)
    question: str = ""  # the customer's latest message
    questions: list[dict[str, Any]] = field(default_factory=list)  # gap candidates
    open_clarify: dict[str, Any] | None = None  # a clarification not followed by an answer
    last_answer: dict[str, Any] | None = None  # the latest answered question (for a 👎)
    angry: bool = False  # a customer message read angry

    def to_json(self) -> str:
        data = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> OpenConversation:
        data = json.loads(text)
        data["cited"] = [tuple(item) for item in data.get("cited", [])]
        return cls(**data)


class Fold:
    """Pure folding of transcripts events into day counters and gap questions."""

    def __init__(self, open_conversations: dict[str, OpenConversation], window: float) -> None:
        self.open = open_conversations
        self.window = window
        self.counters: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.gaps: list[dict[str, Any]] = []
        self.closed: set[str] = set()
        self.changed: set[str] = set()

    def apply(self, event: dict[str, str]) -> None:
        kind = event.get("type", "")
        channel = event.get("channel", "")
        key = f"{channel}:{event.get('conversation', '')}"
        when = float(event.get("time") or 0.0)
        data = json.loads(event.get("data") or "{}")
        state = self.open.get(key)
        if state is not None and when - state.last > SESSION_GAP_SECONDS:
            self.close(key)
            state = None
        if kind == "reset":
            if state is not None:
                self.close(key)
            return
        if kind == "handoff_state":
            self._handoff_state(day_of(when), data)
        if state is None:
            if kind != "turn" or data.get("turn", {}).get("role") != "user":
                return  # ratings and handoff updates of a finished conversation
            state = OpenConversation(channel, day_of(when), when, when)
            self.open[key] = state
            day = self.counters[state.day]
            day["conversations"] += 1
            day[f"conversations:{channel}"] += 1
        self.changed.add(key)
        state.last = max(state.last, when)
        if kind == "turn":
            self._turn(state, data.get("turn", {}), when)
        elif kind == "feedback":
            self._feedback(state, str(data.get("rating", "")), when)
        elif kind == "handoff":
            state.handed_off = True
            reason = str(data.get("reason", ""))
            self.counters[day_of(when)][f"handoff_reason:{handoff_reason_kind(reason)}"] += 1
            if data.get("reason") in NO_ANSWER_REASONS:
                text = str(data.get("text") or state.question)
                state.questions.append({"question": text, "why": "handoff", "time": when})
        elif kind == "handoff_state" and data.get("event") == "request":
            state.handed_off = True

    def _turn(self, state: OpenConversation, turn: dict[str, Any], when: float) -> None:
        role = turn.get("role")
        day = self.counters[state.day]
        if role == "user":
            state.question = str(turn.get("text", ""))
            day[f"messages:{state.channel}"] += 1
            self._mood(state, turn.get("mood"), when)
            return
        if role not in ("assistant", "agent"):
            return
        if not state.first_reply:
            state.first_reply = True
            day[f"first_reply:{bucket_of(when - state.start)}"] += 1
        if role == "agent":
            day["replies:agent"] += 1
            for gap in reversed(state.questions):
                if gap["why"] == "handoff" and not gap.get("agent_answer"):
                    gap["agent_answer"] = str(turn.get("text", ""))
                    break
            return
        action = str(turn.get("action") or "none")
        day[f"replies:{action}"] += 1
        if turn.get("model_version"):
            day[f"model:{turn['model_version']}"] += 1
        if action == "answer":
            state.answers += 1
            state.open_clarify = None
            sources = turn.get("sources") or []
            first = str(sources[0]) if sources else ""
            if first and any(
                source == first and when - at <= self.window for at, source in state.cited
            ):
                state.repeated = True
            if first:
                state.cited.append((when, first))
                del state.cited[:-5]
            state.last_answer = {"question": state.question, "answer": str(turn.get("text", ""))}
        elif action == "clarify":
            state.clarifications += 1
            state.open_clarify = {"question": state.question, "why": "clarify", "time": when}
        elif action == "handoff":
            state.handed_off = True

    def _mood(self, state: OpenConversation, mood: Any, when: float) -> None:
        if not isinstance(mood, dict):
            return  # recorded before moods were read, or a staff command
        day = self.counters[day_of(when)]
        day[f"mood:{mood.get('label') or NEUTRAL_MOOD}"] += 1
        day["mood_messages"] += 1
        day["mood_sentiment_milli"] += round(float(mood.get("sentiment") or 0.0) * 1000)
        if float(mood.get("anger") or 0.0) >= ANGRY_SCORE:
            day["angry_messages"] += 1
            state.angry = True

    def _feedback(self, state: OpenConversation, rating: str, when: float) -> None:
        if rating not in ("up", "down"):
            return
        self.counters[day_of(when)][f"ratings:{rating}"] += 1
        if rating == "down":
            state.rated_down = True
            if state.last_answer and state.last_answer["question"]:
                state.questions.append(
                    {
                        "question": state.last_answer["question"],
                        "why": "rated down",
                        "time": when,
                        "bot_answer": state.last_answer["answer"],
                    }
                )
                state.last_answer = None

    def _handoff_state(self, day_name: str, data: dict[str, Any]) -> None:
        day = self.counters[day_name]
        event = str(data.get("event", ""))
        if event in ("request", "claim", "resolve", "cancel", "timeout", "rate"):
            day[f"handoffs:{event}"] += 1
        if "time_to_claim" in data:
            day[f"claim:{bucket_of(float(data['time_to_claim']))}"] += 1
        if "time_to_resolve" in data:
            day[f"resolve:{bucket_of(float(data['time_to_resolve']))}"] += 1
        csat = str(data.get("csat", ""))
        if csat:
            day[f"csat:{csat}"] += 1

    def close(self, key: str) -> None:
        """The conversation is over: count its outcome, keep its unanswered questions."""
        state = self.open.pop(key)
        self.closed.add(key)
        day = self.counters[state.day]
        day["closed"] += 1
        day["answered"] += state.answers > 0
        day["clarified"] += state.clarifications > 0
        day["handed_off"] += state.handed_off
        day["rated_down"] += state.rated_down
        day["angry_conversations"] += state.angry
        resolved = (
            state.answers > 0 and not state.handed_off and not state.rated_down
        ) and not state.repeated
        day["resolved"] += resolved
        questions = list(state.questions)
        if state.open_clarify and state.open_clarify["question"]:
            questions.append(state.open_clarify)
        conversation = key.partition(":")[2]
        for gap in questions:
            if gap["question"].strip():
                self.gaps.append({**gap, "channel": state.channel, "conversation": conversation})

    def close_idle(self, now: float) -> None:
        for key in [k for k, s in self.open.items() if now - s.last > SESSION_GAP_SECONDS]:
            self.close(key)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Insights:
    """The incremental fold over one deployment's transcripts, and reading its counters."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "dm:", window: float = 600.0):
        self.redis = redis
        self.keys = RedisKeys(prefix)
        self.window = window

    async def update(self, now: float | None = None, owner: str = "") -> int:
        """Fold the transcripts entries added since the last fold; how many were read.
        Returns 0 at once when another process is folding."""
        now = time.time() if now is None else now
        token = owner or f"fold-{time.time_ns()}"
        if not await self.redis.set(self.keys.stats_lock, token, nx=True, ex=LOCK_SECONDS):
            return 0
        try:
            return await self._update(now)
        finally:
            if _text(await self.redis.get(self.keys.stats_lock) or "") == token:
                await self.redis.delete(self.keys.stats_lock)

    async def _update(self, now: float) -> int:
        keys = self.keys
        cursor = _text(await self.redis.get(keys.stats_cursor) or "0-0")
        raw_open = await self.redis.hgetall(keys.stats_open) or {}
        fold = Fold(
            {_text(k): OpenConversation.from_json(_text(v)) for k, v in raw_open.items()},
            self.window,
        )
        read = 0
        while True:
            chunk = await self.redis.xrange(
                keys.transcripts, min="(" + cursor, max="+", count=FOLD_BATCH
            )
            for entry_id, fields in chunk or []:
                fold.apply({_text(k): _text(v) for k, v in (fields or {}).items()})
                cursor = _text(entry_id)
            read += len(chunk or [])
            if len(chunk or []) < FOLD_BATCH:
                break
        fold.close_idle(now)
        async with self.redis.pipeline(transaction=True) as pipe:
            for day, counts in fold.counters.items():
                for name, count in counts.items():
                    if count:
                        pipe.hincrby(keys.stats_day(day), name, int(count))
            for key in fold.closed - set(fold.open):
                pipe.hdel(keys.stats_open, key)
            for key in fold.changed & set(fold.open):
                pipe.hset(keys.stats_open, key, fold.open[key].to_json())
            for gap in fold.gaps:
                pipe.lpush(keys.stats_gaps, json.dumps(gap, ensure_ascii=False))
            if fold.gaps:
                pipe.ltrim(keys.stats_gaps, 0, GAPS_KEPT - 1)
            pipe.set(keys.stats_cursor, cursor)
            await pipe.execute()
        return read

    async def days(self, first: str, last: str) -> dict[str, dict[str, int]]:
        """The counters of every day from `first` to `last` (inclusive) that has any."""
        names: list[str] = []
        day = datetime.strptime(first, "%Y-%m-%d").replace(tzinfo=UTC)
        end = datetime.strptime(last, "%Y-%m-%d").replace(tzinfo=UTC)
        while day <= end and len(names) < 3700:
            names.append(day.strftime("%Y-%m-%d"))
            day = datetime.fromtimestamp(day.timestamp() + 86400, UTC)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.stats_day(name))
            found = await pipe.execute()
        return {
            name: {_text(k): int(v) for k, v in counters.items()}
            for name, counters in zip(names, found, strict=True)
            if counters
        }

    async def gap_questions(self, limit: int = GAPS_KEPT) -> list[dict[str, Any]]:
        """The latest unanswered or 👎 questions, newest first."""
        raw = await self.redis.lrange(self.keys.stats_gaps, 0, limit - 1)
        return [json.loads(_text(item)) for item in raw or []]
