"""Answer metrics: token-F1, ROUGE-L, citation accuracy, handoff detection."""

from __future__ import annotations

import pytest

from training.metrics import is_handoff, rouge_l, score_answers, token_f1


def test_token_f1_ignores_case_punctuation_articles_and_citations() -> None:
    assert token_f1("Refunds take 5 days. [1]", "refunds take 5 days") == 1.0
    assert token_f1("the refund takes days", "refund takes 5 days") == pytest.approx(6 / 7)
    assert token_f1("no overlap", "something else") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0


def test_rouge_l_rewards_order() -> None:
    assert rouge_l("w x y z", "w x y z") == 1.0
    assert rouge_l("z y x w", "w x y z") == pytest.approx(0.25)
    assert token_f1("z y x w", "w x y z") == 1.0


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
