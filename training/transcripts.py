"""Conversations for training: the JSONL shape, and export from the transcripts stream.

One conversation per line:

    {"messages": [{"role": "user"|"assistant"|"agent", "content": "...", "time": 1.0,
                   "message_id"?, "user"?, "action"?, "sources"?, "model_version"?,
                   "rating"?: "up"|"down", "correction"?: "better answer",
                   "mood"?: {"label", "anger", "sentiment", ...},
                   "mood_label"?: "a label staff gave the message, or neutral"}],
     "meta": {"id", "channel", "source", "start", "end", "users", "names",
              "handoffs": [{"time", "reason"}], "ratings": {"up": n, "down": n}}}

`assistant` is the bot, `agent` a human from the support team. Staff review an export by
adding `"correction"` to a bot message (the answer it should have given); `deskmate train`
learns the correction instead. `meta.names` lists people's display names known from the
source (Slack profiles, Telegram senders), so redaction can remove them.

How ratings attach: a feedback event carries the platform id of the rated bot message.
Bot turns in the stream carry no platform id yet (it is assigned on delivery), so a rating
goes to the bot turn with that `message_id` when one has it, else to the last bot turn of
the same conversation recorded before the feedback. A `/reset` starts a new conversation.
A `mood_label` event (staff labelling a customer message's mood in the dashboard) attaches
to the customer message with its `message_id`; the latest label wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from brain.keys import RedisKeys

ROLES = ("user", "assistant", "agent")


class TranscriptFormatError(ValueError):
    """A conversations file or platform export cannot be read; the message says where."""


@dataclass(slots=True)
class Message:
    """One message of a conversation in the training shape."""

    role: str
    content: str
    time: float = 0.0
    message_id: str = ""
    user: str = ""
    action: str = ""
    sources: tuple[str, ...] = ()
    model_version: str = ""
    rating: str = ""
    correction: str = ""
    mood: dict[str, Any] | None = None  # customer messages: see brain.types.Mood
    mood_label: str = ""  # customer messages: the mood staff say it has (or "neutral")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content, "time": self.time}
        for name in (
            "message_id",
            "user",
            "action",
            "model_version",
            "rating",
            "correction",
            "mood_label",
        ):
            if getattr(self, name):
                data[name] = getattr(self, name)
        if self.sources:
            data["sources"] = list(self.sources)
        if self.mood:
            data["mood"] = self.mood
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        if data.get("role") not in ROLES or not isinstance(data.get("content"), str):
            raise ValueError(f"each message needs a role ({', '.join(ROLES)}) and a content text")
        return cls(
            role=data["role"],
            content=data["content"],
            time=float(data.get("time") or 0.0),
            message_id=str(data.get("message_id") or ""),
            user=str(data.get("user") or ""),
            action=str(data.get("action") or ""),
            sources=tuple(data.get("sources") or ()),
            model_version=str(data.get("model_version") or ""),
            rating=str(data.get("rating") or ""),
            correction=str(data.get("correction") or ""),
            mood=dict(data["mood"]) if isinstance(data.get("mood"), dict) else None,
            mood_label=str(data.get("mood_label") or ""),
        )


@dataclass(slots=True)
class Conversation:
    """Messages in order plus metadata (ids, channel, handoffs, rating counts)."""

    messages: list[Message]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"messages": [m.to_json() for m in self.messages], "meta": self.meta}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise ValueError('each line needs {"messages": [...], "meta": {...}}')
        return cls([Message.from_json(m) for m in data["messages"]], dict(data.get("meta") or {}))

    def finish_meta(self) -> Conversation:
        """Fill the summary fields of `meta` from the messages."""
        times = [m.time for m in self.messages if m.time]
        self.meta.setdefault("start", min(times, default=0.0))
        self.meta["end"] = max(times, default=0.0)
        self.meta["users"] = sorted({m.user for m in self.messages if m.user})
        self.meta["ratings"] = {
            rating: sum(m.rating == rating for m in self.messages) for rating in ("up", "down")
        }
        self.meta.setdefault("handoffs", [])
        return self


def read_conversations(path: Path) -> list[Conversation]:
    """Read a conversations JSONL file; a bad line raises naming file:line."""
    conversations = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TranscriptFormatError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise TranscriptFormatError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            conversations.append(Conversation.from_json(json.loads(line)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise TranscriptFormatError(f"{path}:{number}: {exc}") from exc
        except RecursionError:
            raise TranscriptFormatError(f"{path}:{number}: JSON nested too deeply") from None
    return conversations


def write_conversations(path: Path, conversations: Iterable[Conversation]) -> int:
    """Write conversations as JSONL; returns how many."""
    count = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for conversation in conversations:
            out.write(json.dumps(conversation.to_json(), ensure_ascii=False) + "\n")
            count += 1
    return count


def parse_when(text: str, *, end_of_day: bool = False) -> float:
    """A Unix time from an ISO date or datetime (UTC unless it names a zone).

    A bare date as an `--until` bound means the end of that day.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise TranscriptFormatError(
            f"{text!r} is not a date like 2026-11-01 or 2026-11-01T09:30"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if end_of_day and len(text) == 10:
        moment += timedelta(days=1)
    return moment.timestamp()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_events(
    redis: aioredis.Redis,
    prefix: str,
    since: float | None = None,
    until: float | None = None,
    batch: int = 1000,
) -> list[dict[str, Any]]:
    """Transcript events between two times (stream ids are millisecond timestamps)."""
    key = RedisKeys(prefix).transcripts
    start = f"{int(since * 1000)}-0" if since is not None else "-"
    end = f"{int(until * 1000) - 1}-18446744073709551615" if until is not None else "+"
    events = []
    while True:
        chunk = await redis.xrange(key, min=start, max=end, count=batch) or []
        for entry_id, fields in chunk:
            event = {_text(k): _text(v) for k, v in (fields or {}).items()}
            event["id"] = _text(entry_id)
            events.append(event)
        if len(chunk) < batch:
            return events
        last = _text(chunk[-1][0])
        start = "(" + last


def conversations_from_events(
    events: Sequence[dict[str, Any]], channel: str | None = None
) -> list[Conversation]:
    """Group stream events into conversations, attach ratings and handoffs."""
    open_conversations: dict[tuple[str, str], Conversation] = {}
    finished: list[Conversation] = []
    part: dict[tuple[str, str], int] = {}

    def close(key: tuple[str, str]) -> None:
        conversation = open_conversations.pop(key, None)
        if conversation is not None and conversation.messages:
            finished.append(conversation)

    for event in events:
        if channel and event.get("channel") != channel:
            continue
        key = (event.get("channel", ""), event.get("conversation", ""))
        kind = event.get("type")
        data = json.loads(event.get("data") or "{}")
        when = float(event.get("time") or 0.0)
        if kind == "reset":
            close(key)
            continue
        if key not in open_conversations:
            part[key] = part.get(key, 0) + 1
            ident = f"{key[0]}:{key[1]}" + (f"#{part[key]}" if part[key] > 1 else "")
            open_conversations[key] = Conversation(
                [], {"id": ident, "channel": key[0], "source": "transcripts"}
            )
        conversation = open_conversations[key]
        if kind == "turn":
            turn = data.get("turn", {})
            if turn.get("role") not in ROLES:
                continue
            conversation.messages.append(
                Message(
                    role=turn["role"],
                    content=str(turn.get("text", "")),
                    time=float(turn.get("time") or when),
                    message_id=str(turn.get("message_id") or ""),
                    user=str(turn.get("user_id") or event.get("user", "")),
                    action=str(turn.get("action") or ""),
                    sources=tuple(turn.get("sources") or ()),
                    model_version=str(turn.get("model_version") or ""),
                    mood=turn.get("mood") if isinstance(turn.get("mood"), dict) else None,
                )
            )
        elif kind == "feedback":
            target = _rated_message(conversation, str(data.get("message_id", "")))
            if target is not None and data.get("rating") in ("up", "down"):
                target.rating = data["rating"]
        elif kind == "mood_label":
            labelled = str(data.get("message_id", ""))
            for message in conversation.messages:
                if message.role == "user" and labelled and message.message_id == labelled:
                    message.mood_label = str(data.get("label", ""))
        elif kind == "handoff":
            conversation.meta.setdefault("handoffs", []).append(
                {"time": when, "reason": str(data.get("reason", ""))}
            )
    for key in list(open_conversations):
        close(key)
    finished.sort(key=lambda c: c.messages[0].time)
    return [conversation.finish_meta() for conversation in finished]


def _rated_message(conversation: Conversation, message_id: str) -> Message | None:
    bot_messages = [m for m in conversation.messages if m.role == "assistant"]
    if message_id:
        for message in bot_messages:
            if message.message_id == message_id:
                return message
    return bot_messages[-1] if bot_messages else None


async def export_transcripts(
    redis: aioredis.Redis,
    prefix: str,
    since: float | None = None,
    until: float | None = None,
    channel: str | None = None,
) -> list[Conversation]:
    """Conversations recorded between `since` and `until`, optionally one channel only."""
    events = await read_events(redis, prefix, since, until)
    return conversations_from_events(events, channel)
