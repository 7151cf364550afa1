"""The policy's decision table on hand-made hits."""

from __future__ import annotations

import pytest

from brain.policy import anger_reason, decide, is_anger_reason
from brain.types import Mood
from retrieval.faq import FaqEntry
from retrieval.index import FaqHit, Thresholds

THRESHOLDS = Thresholds(answer=0.6, clarify=0.4)
FAQ = FaqEntry("returns", "How do I return an item?", "Use the returns form.")
PASSAGE = FaqEntry("review-7", "Riverside shop: customer review", "Returns were painless.")


def hit(entry: FaqEntry, score: float) -> FaqHit:
    return FaqHit(entry=entry, score=score, dense=score, keyword=0.0)


@pytest.mark.parametrize(
    ("entry", "score", "action"),
    [
        (FAQ, 0.7, "answer"),
        (FAQ, 0.5, "clarify"),
        (FAQ, 0.3, "handoff"),
        (PASSAGE, 0.7, "answer"),
        (PASSAGE, 0.5, "answer"),  # a review is no option to offer: answer from passages
        (PASSAGE, 0.3, "handoff"),
    ],
)
def test_the_decision_follows_the_thresholds_and_the_kind_of_knowledge(
    entry: FaqEntry, score: float, action: str
) -> None:
    assert decide("does it work?", [hit(entry, score)], THRESHOLDS).action == action


def test_people_and_anger_come_before_any_match() -> None:
    assert decide("let me talk to a person", [hit(FAQ, 0.9)], THRESHOLDS).action == "handoff"
    angry = decide("how do I return this?", [hit(FAQ, 0.9)], THRESHOLDS, "angry customer: x")
    assert angry.action == "handoff" and angry.reason == "angry customer: x"
    assert decide("anything", [], THRESHOLDS).action == "handoff"


def mood(anger: float, source: str = "v1") -> Mood:
    return Mood("anger" if anger > 0.5 else "joy", anger, -anger, source=source)


def test_strong_anger_alone_hands_off_and_says_how_strong() -> None:
    reason = anger_reason(mood(0.93), [], strong=0.8, sustained=0.5)
    assert reason == "angry customer: anger 0.93 (strong: at least 0.80)"
    assert is_anger_reason(reason)
    assert anger_reason(mood(0.7), [], strong=0.8, sustained=0.5) is None


def test_sustained_anger_needs_two_customer_messages_in_a_row() -> None:
    reason = anger_reason(mood(0.6), [mood(0.2), mood(0.55)], strong=0.8, sustained=0.5)
    assert reason is not None and "0.55 then 0.60" in reason and "sustained" in reason
    assert anger_reason(mood(0.6), [mood(0.55), mood(0.2)], strong=0.8, sustained=0.5) is None
    assert anger_reason(mood(0.4), [mood(0.9)], strong=0.95, sustained=0.5) is None


def test_the_word_list_fallback_says_so() -> None:
    reason = anger_reason(mood(1.0, "regex"), [], strong=0.5, sustained=2.0)
    assert reason == "angry customer: angry words or shouting (word list)"
