"""The confidence the policy reads: features of the hits, the calibrated model, storage."""

from __future__ import annotations

import random

import numpy as np
import pytest

from retrieval.confidence import FEATURES, Thresholds, features, neighbour_features
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


def topical_traffic(seed: int = 0, with_vectors: bool = True) -> list[ScoredQuery]:
    """Hits that score alike for both kinds; out-of-scope questions are about other
    topics (their own corners of the embedding space), as real out-of-scope traffic is."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(8, 16))
    scored = []
    for number in range(400):
        out_of_scope = number % 2 == 0
        topic = topics[rng.integers(4) + (4 if out_of_scope else 0)]
        vector = (topic + rng.normal(scale=0.6, size=16)).astype(np.float32)
        vector /= np.linalg.norm(vector)
        top = float(rng.uniform(0.5, 0.7))
        hits = [hit("a", top), hit("b", top - float(rng.uniform(0.0, 0.2)))]
        query = LabelledQuery(f"q{number}", () if out_of_scope else ("a",))
        scored.append(ScoredQuery(query, hits, 5.0, vector if with_vectors else None))
    return scored


def test_labelled_neighbours_tell_out_of_scope_questions_that_score_like_covered_ones() -> None:
    scored = topical_traffic()
    thresholds = calibrate(scored, "q.jsonl", model="embedder-x")
    assert thresholds.model is not None and thresholds.model.reads_neighbours
    examples = thresholds.examples
    assert examples is not None and examples.model == "embedder-x"
    assert len(examples.texts) == 400 and int(examples.out_of_scope.sum()) == 200
    predicted = cross_validated_oos(scored)
    assert predicted is not None
    assert report(scored, thresholds, predicted).oos_f1 > 0.9
    # The same queries without their vectors: the hits alone cannot tell them apart.
    blind = topical_traffic(with_vectors=False)
    assert calibrate(blind, "q.jsonl").examples is None
    blind_predicted = cross_validated_oos(blind)
    assert blind_predicted is not None
    assert report(blind, thresholds, blind_predicted).oos_f1 < 0.75
    described = "\n".join(thresholds.describe())
    assert "nearest_out" in described and "among 400 labelled questions" in described


def test_a_question_is_never_its_own_neighbour() -> None:
    references = np.eye(4, dtype=np.float32)
    flags = np.array([True, False, False, False])
    own = neighbour_features(references, references, flags, np.arange(4))
    seen = neighbour_features(references, references, flags)
    assert seen[0, 0] == pytest.approx(1.0)  # the out-of-scope question finds itself
    assert own[0, 0] == pytest.approx(-1.0)  # ... unless excluded: no other is out of scope
    assert own[1, 0] == pytest.approx(0.0) and own[1, 1] == pytest.approx(0.0)
    assert own[1, 2] == pytest.approx(1 / 3)  # one of its three neighbours is out of scope


def test_thresholds_reading_neighbours_survive_storage_and_old_models_still_load() -> None:
    thresholds = calibrate(topical_traffic(), "q.jsonl", model="embedder-x")
    assert thresholds.examples is not None
    saved = thresholds.to_json()
    again = Thresholds.from_json(saved, thresholds.examples.vectors)
    assert again.examples is not None and again.examples.texts == thresholds.examples.texts
    hits = [hit("a", 0.6), hit("b", 0.55)]
    neighbours = thresholds.examples.neighbours(thresholds.examples.vectors[0])
    assert again.confidence(hits, neighbours) == pytest.approx(
        thresholds.confidence(hits, neighbours)
    )
    # Without the vectors beside, the examples are left out and the neighbours count as
    # average: a confidence, not an error.
    assert Thresholds.from_json(saved).examples is None
    assert 0.0 < Thresholds.from_json(saved).confidence(hits) < 1.0
    # A model saved before neighbours existed (seven features) still loads and reads hits.
    old_model = calibrate(ambiguous_traffic(), "q.jsonl").to_json()
    assert len(old_model["model"]["features"]) == len(FEATURES)
    assert not Thresholds.from_json(old_model).model.reads_neighbours  # type: ignore[union-attr]
