"""Answer metrics: token-F1, ROUGE-L, citation accuracy, handoff detection."""

from __future__ import annotations

import pytest

from training.scoring import is_handoff, score_answers


def test_scores_over_a_set() -> None:
    scores = score_answers(
        ["Use tildes [2]", "I don't know, let me connect you with a person.", "Go to settings [1]"],
        ["Use tildes", "Open settings", "Go to settings"],
        [["x", "tilde"], ["s"], ["other", "settings"]],
        ["tilde", None, "settings"],
    )
    assert scores.n == 3
    assert scores.citation_accuracy == 0.5  # the third cites [1] = "other", not "settings"
    assert scores.handoff_rate == pytest.approx(1 / 3)
    assert is_handoff("I'm passing you to a member of our support team")
    assert not is_handoff("Returns are free within 30 days [1]")
