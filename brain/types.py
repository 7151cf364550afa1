"""Core message types. Frozen, slotted, no I/O; adapters translate to and from them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from brain.text import replace_surrogates
from retrieval.index import FaqHit

Channel = Literal["telegram", "slack", "console", "http"]
Role = Literal["user", "assistant", "agent"]
Action = Literal["answer", "clarify", "handoff", "none"]

__all__ = [
    "Action",
    "Channel",
    "FaqHit",
    "Feedback",
    "Inbound",
    "Mood",
    "QuickReply",
    "Rating",
    "Reply",
    "Role",
    "Source",
    "Turn",
]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from a user, normalised by an adapter."""

    channel: Channel
    conversation_id: str
    user_id: str
    message_id: str
    text: str
    time: float = field(default_factory=time.time)
    is_staff: bool = False
    is_group: bool = False
    mentioned: bool = False
    attachment: str = ""  # what came instead of / beside text: "sticker", "photo", "voice", ...
    # A support agent writing into a handed-off conversation (from the staff thread):
    # `user_id` is the agent, `channel` and `conversation_id` are the customer's.
    agent: bool = False
    # Characters the customer sent when `text` was cut to what the brain reads (0: whole).
    full_length: int = 0

    def encodable(self) -> Inbound:
        """This message with lone surrogates in its strings replaced by U+FFFD: a client
        that cut a string mid-emoji sends them, and Redis (UTF-8) would refuse it whole."""
        changes: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, str) and (cleaned := replace_surrogates(value)) != value:
                changes[spec.name] = cleaned
        return replace(self, **changes) if changes else self

    def bounded(self, max_chars: int) -> Inbound:
        """This message as it may be stored: `encodable`, and a customer's text cut to the
        first `max_chars` characters, the most the brain reads, with `full_length` saying
        how long it was. An agent's message is passed on whole."""
        inbound = self.encodable()
        if len(inbound.text) <= max_chars or inbound.agent:
            return inbound
        return replace(
            inbound,
            text=inbound.text[:max_chars],
            full_length=inbound.full_length or len(inbound.text),
        )


@dataclass(frozen=True, slots=True)
class Source:
    """A FAQ entry a reply is based on."""

    id: str
    title: str
    score: float
    url: str | None = None

    @classmethod
    def from_hit(cls, hit: FaqHit) -> Source:
        return cls(hit.id, hit.title, round(hit.score, 4), hit.entry.url)


@dataclass(frozen=True, slots=True)
class QuickReply:
    """A button offered with a reply: pressing it sends `text` as the customer's message
    (channels without buttons show the text to type instead)."""

    label: str
    text: str


@dataclass(frozen=True, slots=True)
class Reply:
    """What the brain answers. `action` "none" means: say nothing (a human holds the chat)."""

    text: str
    action: Action
    sources: tuple[Source, ...] = ()
    confidence: float = 0.0
    model_version: str = ""
    notice: str = ""  # a side note for the channel, e.g. "read the first 4,000 characters"
    in_reply_to: str = ""  # the platform message id answered; set by the message flow
    quick_replies: tuple[QuickReply, ...] = ()  # one-tap answers: cancel, a rating


NEUTRAL_MOOD = "neutral"  # what reports and staff call a message that expresses no emotion


@dataclass(frozen=True, slots=True)
class Mood:
    """How a customer message reads: `emotional`, the probability that it expresses an
    emotion at all (most support questions do not); `scores`, the probability of each
    label given that it does (label names come from the training data); `label`, the
    most probable one, or "" for a neutral message; `anger` = emotional x P(anger) and
    `sentiment` = emotional x (P(positive labels) - P(negative labels)), in [-1, 1]; and
    what read it (a classifier version, or `regex` for the word-list fallback)."""

    label: str
    anger: float
    sentiment: float
    scores: tuple[tuple[str, float], ...] = ()
    source: str = ""
    emotional: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "anger": self.anger,
            "sentiment": self.sentiment,
            "emotional": self.emotional,
            "scores": dict(self.scores),
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mood:
        return cls(
            label=str(data.get("label", "")),
            anger=float(data.get("anger", 0.0)),
            sentiment=float(data.get("sentiment", 0.0)),
            scores=tuple((str(k), float(v)) for k, v in dict(data.get("scores") or {}).items()),
            source=str(data.get("source", "")),
            emotional=float(data.get("emotional", 1.0)),
        )


@dataclass(frozen=True, slots=True)
class Turn:
    """One entry of a conversation's history; roles match the training `messages` shape."""

    role: Role
    text: str
    time: float = field(default_factory=time.time)
    message_id: str = ""
    user_id: str = ""
    action: Action | None = None
    sources: tuple[str, ...] = ()
    model_version: str = ""
    mood: Mood | None = None  # customer turns: how the message reads (see brain.mood)
    # A customer's message cut to what the brain reads: how long it was (0: kept whole).
    full_length: int = 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "text": self.text, "time": self.time}
        for name in ("message_id", "user_id", "action", "model_version", "full_length"):
            value = getattr(self, name)
            if value:
                data[name] = value
        if self.sources:
            data["sources"] = list(self.sources)
        if self.mood is not None:
            data["mood"] = self.mood.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Turn:
        return cls(
            role=data["role"],
            text=data["text"],
            time=float(data.get("time", 0.0)),
            message_id=data.get("message_id", ""),
            user_id=data.get("user_id", ""),
            action=data.get("action"),
            sources=tuple(data.get("sources", ())),
            model_version=data.get("model_version", ""),
            mood=Mood.from_json(data["mood"]) if data.get("mood") else None,
            full_length=int(data.get("full_length", 0)),
        )


Rating = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class Feedback:
    """A 👍/👎 press on a bot message, identified by the platform's message id."""

    channel: Channel
    conversation_id: str
    user_id: str
    message_id: str
    rating: Rating
    time: float = field(default_factory=time.time)
