"""The policy's decision table on hand-made hits."""

from __future__ import annotations

import pytest

from brain.policy import decide
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
    assert decide("this is a scam", [hit(FAQ, 0.9)], THRESHOLDS).action == "handoff"
    assert decide("anything", [], THRESHOLDS).action == "handoff"
