"""The policy: answer, clarify or hand off, on thresholds calibrated by `deskmate eval`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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
    """Strong negative words, or shouting (mostly capitals with several exclamation marks)."""
    if _ANGRY.search(text):
        return True
    letters = [c for c in text if c.isalpha()]
    shouting = len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.8
    return shouting and text.count("!") >= 2


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    action: Decision
    reason: str


def decide(text: str, hits: Sequence[FaqHit], thresholds: Thresholds) -> PolicyDecision:
    """What to do with a question given its FAQ hits."""
    if wants_human(text):
        return PolicyDecision("handoff", "asked for a person")
    if is_upset(text):
        return PolicyDecision("handoff", "customer seems upset")
    if not hits or hits[0].score < thresholds.clarify:
        return PolicyDecision("handoff", "not covered by the FAQ")
    if hits[0].score < thresholds.answer:
        if hits[0].entry.is_passage:
            # A review or a note is no choice to offer ("Did you mean: Guest review?"):
            # the answer is written from the best few passages, or the model says it
            # does not know and the conversation goes to a person.
            return PolicyDecision("answer", "passages that may cover it")
        return PolicyDecision("clarify", "weak FAQ match")
    if not hits[0].entry.answer:
        return PolicyDecision("handoff", "the matching FAQ entry has no answer on file")
    return PolicyDecision("answer", "confident FAQ match")
