"""Answer metrics: token-F1 and ROUGE-L."""

from __future__ import annotations

import pytest

from brain.evaluation.metrics import answer_tokens, rouge_l, token_f1


def test_tokens_drop_citations_punctuation_and_articles() -> None:
    assert answer_tokens("The refund takes 5 days [1].") == ["refund", "takes", "5", "days"]


def test_token_f1() -> None:
    assert token_f1("Refunds take 5 days [1].", "refunds take 5 days") == 1.0
    assert token_f1("completely different", "refunds take 5 days") == 0.0
    # 2 of 3 predicted tokens match 2 of 4 reference tokens: P=2/3, R=1/2.
    assert token_f1("refunds take ages", "refunds take 5 days") == pytest.approx(4 / 7)
    assert token_f1("", "") == 1.0


def test_rouge_l() -> None:
    assert rouge_l("Refunds take 5 days [1].", "Refunds take 5 days.") == pytest.approx(1.0)
    assert 0.0 < rouge_l("refunds take about 5 days", "refunds take 5 working days") < 1.0
    assert rouge_l("nothing alike", "refunds take 5 days") == 0.0
