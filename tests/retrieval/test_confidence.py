"""The confidence the policy reads: features of the hits, the calibrated model, storage."""

from __future__ import annotations

import random

import numpy as np
import pytest

from retrieval.confidence import FEATURES, Thresholds, features
from retrieval.evaluation import (
    LabelledQuery,
    ScoredQuery,
    calibrate,
    cross_validated_oos,
    report,
)
from retrieval.faq import FaqEntry
from retrieval.index import FaqHit


def hit(entry_id: str, score: float, keyword: float = 0.0) -> FaqHit:
    return FaqHit(FaqEntry(entry_id, entry_id, "a"), score, score, keyword)


def test_features_read_the_margin_and_the_agreement_of_the_rankings() -> None:
    row = features([hit("a", 0.8, keyword=0.1), hit("b", 0.5, keyword=0.4), hit("c", 0.4)])
    named = dict(zip(FEATURES, row, strict=True))
    assert named["score"] == pytest.approx(0.8)
    assert named["margin"] == pytest.approx(0.3)
    assert named["dense_agrees"] == 1.0
    assert named["keyword_agrees"] == 0.0  # "b" has the better keyword score
    assert named["spread"] == pytest.approx(0.8 - 0.45)
    assert not features([]).any()


def ambiguous_traffic(seed: int = 0) -> list[ScoredQuery]:
    """Top scores alike for both kinds; only in-scope questions stand out of the rest."""
    rng = random.Random(seed)
    scored = []
    for number in range(300):
        top = rng.uniform(0.5, 0.7)
        in_scope = number % 3 != 0
        second = top - (rng.uniform(0.12, 0.25) if in_scope else rng.uniform(0.0, 0.06))
        hits = [hit("a", top), hit("b", second), hit("c", second - 0.02)]
        scored.append(ScoredQuery(LabelledQuery("q", ("a",) if in_scope else ()), hits, 5.0))
    return scored


def test_calibration_learns_what_one_top_score_cannot_tell() -> None:
    scored = ambiguous_traffic()
    thresholds = calibrate(scored, "q.jsonl")
    assert thresholds.model is not None
    assert thresholds.calibrated_from == "q.jsonl"
    assert thresholds.clarify <= thresholds.answer
    assert "cross-validated" in thresholds.note
    predicted = cross_validated_oos(scored)
    assert predicted is not None
    assert report(scored, thresholds, predicted).oos_f1 > 0.9
    # The best single cut on the top score alone does far worse on the same queries.
    scores = np.array([s.top_score for s in scored])
    actual = np.array([s.query.out_of_scope for s in scored])
    best = max(
        2 * ((scores < c) & actual).sum() / ((scores < c).sum() + actual.sum()) for c in scores
    )
    assert best < 0.7
    described = "\n".join(thresholds.describe())
    assert "P(in scope)" in described and "margin" in described


def test_too_few_labelled_queries_fall_back_to_conservative_defaults_and_say_so() -> None:
    few = ambiguous_traffic()[:24]
    thresholds = calibrate(few, "q.jsonl")
    assert thresholds.model is None
    assert (thresholds.answer, thresholds.clarify) == (Thresholds().answer, Thresholds().clarify)
    assert "too few labelled queries" in thresholds.note
    assert cross_validated_oos(few) is None


def test_thresholds_with_their_model_survive_storage() -> None:
    thresholds = calibrate(ambiguous_traffic(), "q.jsonl")
    again = Thresholds.from_json(thresholds.to_json())
    assert again == thresholds
    hits = [hit("a", 0.6), hit("b", 0.59)]
    assert again.confidence(hits) == pytest.approx(thresholds.confidence(hits))
    # Thresholds saved before the model existed still load, as a plain score cut.
    old = Thresholds.from_json({"answer": 0.5, "clarify": 0.3, "calibrated_from": None})
    assert old.model is None and old.confidence(hits) == pytest.approx(0.6)
