"""The policy: answer, clarify or hand off, on thresholds calibrated by `deskmate eval`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from brain.types import Mood
from retrieval.index import FaqHit, Thresholds

Decision = Literal["answer", "clarify", "handoff"]

_HUMAN_REQUEST = re.compile(
    r"\b(?:(?:talk|speak|chat)\s+(?:to|with)\s+(?:a\s+|an\s+|some\s*one\s+|your\s+)?"
    r"(?:real\s+|live\s+)?(?:human|person|agent|representative|operator|someone|somebody|staff)"
    r"|real\s+(?:human|person)|human\s+(?:agent|being|please)|live\s+(?:agent|chat|person)"
    r"|customer\s+service\s+(?:agent|rep)|representative\s+please)\b",
    re.IGNORECASE,
)
_ANGRY = re.compile(
    r"\b(?:useless|ridiculous|pathetic|unacceptable|worst|scam|furious|outrageous|disgusting"
    r"|terrible service|fed up|sick of|rip[- ]?off|wtf|lawyer|sue you)\b",
    re.IGNORECASE,
)


_GREETING = re.compile(
    r"^(?:hi|hello|hey|hiya|howdy|good (?:morning|afternoon|evening)|yo|hallo|hola)"
    r"(?: there| all| team)?[\s!.,?]*$",
    re.IGNORECASE,
)
_THANKS = re.compile(
    r"^(?:(?:ok(?:ay)?|great|perfect|cool)[\s,!.]*)?(?:thanks?(?: you)?|thx|ty|cheers|"
    r"much appreciated)(?: (?:so much|a lot|very much))?[\s!.,]*$",
    re.IGNORECASE,
)


def small_talk(text: str) -> str | None:
    """'greeting' or 'thanks' for messages that are only that, else None."""
    if _GREETING.match(text):
        return "greeting"
    if _THANKS.match(text):
        return "thanks"
    return None


def wants_human(text: str) -> bool:
    return bool(_HUMAN_REQUEST.search(text))


def is_upset(text: str) -> bool:
    """Strong negative words, or shouting (mostly capitals with several exclamation marks).

    Only the fallback of `brain.mood.reader` when no mood classifier fits."""
    if _ANGRY.search(text):
        return True
    letters = [c for c in text if c.isalpha()]
    shouting = len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.8
    return shouting and text.count("!") >= 2


ANGRY_CUSTOMER = "angry customer"  # how every anger handoff reason starts


def is_anger_reason(reason: str) -> bool:
    """Whether a handoff reason is the customer's anger (see `anger_reason`)."""
    return reason.startswith(ANGRY_CUSTOMER)


def anger_reason(
    mood: Mood | None, earlier: Sequence[Mood], strong: float, sustained: float
) -> str | None:
    """Why the customer's anger hands the conversation to a person, or None.

    Strong: this message's anger probability is at least `strong`. Sustained: this one
    and the customer's previous message (the last of `earlier`) are both at least
    `sustained`. The reason names the figures, so staff see why in the escalation.
    """
    if mood is None:
        return None
    if mood.anger >= strong:
        if mood.source == "regex":
            return f"{ANGRY_CUSTOMER}: angry words or shouting (word list)"
        return f"{ANGRY_CUSTOMER}: anger {mood.anger:.2f} (strong: at least {strong:.2f})"
    if earlier and min(earlier[-1].anger, mood.anger) >= sustained:
        return (
            f"{ANGRY_CUSTOMER}: anger {earlier[-1].anger:.2f} then {mood.anger:.2f} "
            f"(sustained: two messages at least {sustained:.2f})"
        )
    return None


NOT_COVERED = "not covered by the FAQ"
WEAK_MATCH = "weak FAQ match"


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    action: Decision
    reason: str


def decide(
    text: str, hits: Sequence[FaqHit], thresholds: Thresholds, anger: str | None = None
) -> PolicyDecision:
    """What to do with a question given its FAQ hits (best first; the confidence reads
    the first few, see retrieval.confidence) and, if the customer is angry, why
    (`anger_reason`)."""
    if wants_human(text):
        return PolicyDecision("handoff", "asked for a person")
    if anger:
        return PolicyDecision("handoff", anger)
    confidence = thresholds.confidence(hits)
    if not hits or confidence < thresholds.clarify:
        return PolicyDecision("handoff", NOT_COVERED)
    if confidence < thresholds.answer:
        if hits[0].entry.is_passage:
            # A review or a note is no choice to offer ("Did you mean: Guest review?"):
            # the answer is written from the best few passages, or the model says it
            # does not know and the conversation goes to a person.
            return PolicyDecision("answer", "passages that may cover it")
        return PolicyDecision("clarify", WEAK_MATCH)
    if not hits[0].entry.answer:
        return PolicyDecision("handoff", "the matching FAQ entry has no answer on file")
    return PolicyDecision("answer", "confident FAQ match")
