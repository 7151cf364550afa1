"""Retrieval metrics and threshold calibration."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.evaluation import (
    CalibrationError,
    LabelledQuery,
    ScoredQuery,
    calibrate,
    load_queries,
    report,
)
from retrieval.faq import FaqEntry, FaqFormatError
from retrieval.index import FaqHit, Thresholds


def hit(entry_id: str, score: float) -> FaqHit:
    return FaqHit(FaqEntry(entry_id, entry_id, "a"), score, score, 0.0)


def scored(relevant: tuple[str, ...], hits: list[FaqHit], ms: float = 10.0) -> ScoredQuery:
    return ScoredQuery(LabelledQuery("q", relevant), hits, ms)


def test_metrics_by_hand() -> None:
    results = [
        scored(("a",), [hit("a", 0.9), hit("b", 0.5)], 10),  # rank 1
        scored(("b",), [hit("a", 0.8), hit("b", 0.7)], 20),  # rank 2
        scored(("c",), [hit("a", 0.6), hit("b", 0.5)], 30),  # missed
        scored((), [hit("a", 0.3)], 40),  # out of scope, low score
        scored((), [hit("b", 0.85)], 50),  # out of scope, high score
    ]
    result = report(results, Thresholds(answer=0.65, clarify=0.4))
    assert result.n == 5
    assert result.recall_at_1 == pytest.approx(1 / 3)
    assert result.recall_at_5 == pytest.approx(2 / 3)
    assert result.mrr == pytest.approx((1 + 0.5) / 3)
    # Predicted out of scope (< 0.65): the 0.6 in-scope one and the 0.3 one.
    assert result.oos_precision == pytest.approx(0.5)
    assert result.oos_recall == pytest.approx(0.5)
    assert result.oos_f1 == pytest.approx(0.5)
    assert result.p50_ms == pytest.approx(30)
    keys = set(result.to_json())
    assert keys == {"n", "recall@1", "recall@5", "mrr", "oos_precision", "oos_recall",
                    "oos_f1", "p50_ms", "p95_ms"}  # fmt: skip


def test_calibration_separates_in_scope_from_out_of_scope() -> None:
    # 100 in scope scoring 0.7-0.9, 99 out of scope at 0.2-0.5 and one at 0.72.
    results = [scored(("a",), [hit("a", 0.7 + 0.2 * i / 99)]) for i in range(100)]
    results += [scored((), [hit("a", 0.2 + 0.3 * i / 98)]) for i in range(99)]
    results += [scored((), [hit("a", 0.72)])]
    thresholds = calibrate(results, "q.jsonl")
    assert thresholds.model is not None and thresholds.calibrated_from == "q.jsonl"
    assert report(results, thresholds).oos_f1 > 0.95
    # Handoff only where the queries below are (nearly) all out of scope.
    assert thresholds.clarify <= thresholds.answer
    assert thresholds.confidence([hit("a", 0.3)]) < thresholds.clarify
    assert thresholds.confidence([hit("a", 0.9)]) >= thresholds.answer


def test_calibration_needs_both_kinds_of_query() -> None:
    with pytest.raises(CalibrationError, match="out-of-scope"):
        calibrate([scored(("a",), [hit("a", 0.9)])], "q")


def test_query_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "ok", "relevant": ["a"]}\n{"query": 3}\n')
    with pytest.raises(FaqFormatError, match=r"q\.jsonl:2"):
        load_queries(path)
    path.write_text('{"query": "ok", "relevant": "a"}\n')
    with pytest.raises(FaqFormatError, match="'relevant' must be a list"):
        load_queries(path)


def test_a_query_line_may_carry_its_conversation(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"query": "is it free?", "relevant": ["a"], "history": ['
        '{"role": "user", "content": "how do I return it?"},'
        '{"role": "agent", "content": "Use the form."}]}\n'
        '{"query": "alone", "relevant": []}\n'
    )
    first, second = load_queries(path)
    assert first.history == (("user", "how do I return it?"), ("agent", "Use the form."))
    assert second.history == ()


@pytest.mark.parametrize(
    ("history", "says"),
    [
        ('"user: hi"', "must be a list"),
        ('[{"role": "customer", "content": "hi"}]', "turn 1"),
        ('[{"role": "user", "content": "hi"}, {"role": "agent"}]', "turn 2"),
        ('[["user", "hi"]]', "turn 1"),
    ],
)
def test_a_malformed_history_names_the_line(tmp_path: Path, history: str, says: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(f'{{"query": "ok", "relevant": []}}\n{{"query": "x", "history": {history}}}\n')
    with pytest.raises(FaqFormatError, match=rf"q\.jsonl:2: .*history.*{says}"):
        load_queries(path)
