"""Retrieval evaluation and threshold calibration on labelled query files.

A query line is `{"query", "relevant": [ids]}`; an empty `relevant` marks an out-of-scope
question the bot must not answer from the FAQ. A line may carry the conversation so far,
`"history": [{"role": "user"|"agent"|"assistant", "content": text}, ...]` (oldest first):
the query is then searched in that context, as in a live chat. "Predicted out of scope"
means the best hit scores below the answer threshold, which is exactly when the policy
does not answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.faq import FaqFormatError, read_json_lines
from retrieval.index import FaqHit, SearchMode, Thresholds
from retrieval.retriever import Retriever

# Handoff (below the clarify threshold) must be right this often on the calibration set.
HANDOFF_PRECISION = 0.9


HISTORY_ROLES = ("user", "agent", "assistant")


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    query: str
    relevant: tuple[str, ...]
    answer: str | None = None
    history: tuple[tuple[str, str], ...] = ()  # (role, content), oldest first

    @property
    def out_of_scope(self) -> bool:
        return not self.relevant


def load_queries(path: Path | str) -> list[LabelledQuery]:
    path = Path(path)
    queries = []
    for number, record in read_json_lines(path):
        if not isinstance(record.get("query"), str):
            raise FaqFormatError(path, number, 'each line needs {"query": text, "relevant": [ids]}')
        relevant = record.get("relevant", [])
        if not isinstance(relevant, list) or not all(isinstance(i, str) for i in relevant):
            raise FaqFormatError(path, number, "'relevant' must be a list of FAQ ids")
        answer = record.get("answer")
        queries.append(
            LabelledQuery(
                record["query"],
                tuple(relevant),
                answer if isinstance(answer, str) else None,
                _history(record.get("history", []), path, number),
            )
        )
    if not queries:
        raise FaqFormatError(path, None, "no queries found")
    return queries


def _history(value: object, path: Path, line: int) -> tuple[tuple[str, str], ...]:
    shape = '\'history\' must be a list of {"role": "user"|"agent"|"assistant", "content": text}'
    if not isinstance(value, list):
        raise FaqFormatError(path, line, shape)
    turns = []
    for number, turn in enumerate(value, start=1):
        if (
            not isinstance(turn, dict)
            or turn.get("role") not in HISTORY_ROLES
            or not isinstance(turn.get("content"), str)
        ):
            raise FaqFormatError(path, line, f"{shape} (turn {number} is {turn!r:.80})")
        turns.append((str(turn["role"]), str(turn["content"])))
    return tuple(turns)


@dataclass(frozen=True, slots=True)
class ScoredQuery:
    query: LabelledQuery
    hits: list[FaqHit]
    ms: float

    @property
    def top_score(self) -> float:
        return self.hits[0].score if self.hits else 0.0

    def rank(self) -> int | None:
        """1-based rank of the first relevant hit, None if none was retrieved."""
        for position, hit in enumerate(self.hits, start=1):
            if hit.id in self.query.relevant:
                return position
        return None


@dataclass(frozen=True, slots=True)
class RetrievalReport:
    n: int
    recall_at_1: float
    recall_at_5: float
    mrr: float
    oos_precision: float
    oos_recall: float
    oos_f1: float
    p50_ms: float
    p95_ms: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "recall@1": self.recall_at_1,
            "recall@5": self.recall_at_5,
            "mrr": self.mrr,
            "oos_precision": self.oos_precision,
            "oos_recall": self.oos_recall,
            "oos_f1": self.oos_f1,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
        }


def run_queries(
    retriever: Retriever,
    queries: Sequence[LabelledQuery],
    mode: SearchMode = "hybrid",
    k: int = 10,
    progress: Callable[[int], None] | None = None,
    with_history: bool = True,
) -> list[ScoredQuery]:
    """Search every query (in the context of its history, unless `with_history` is off)."""
    scored = []
    for query in queries:
        start = time.perf_counter()
        history = query.history if with_history else ()
        hits = retriever.search(query.query, k=k, mode=mode, history=history)
        scored.append(ScoredQuery(query, hits, (time.perf_counter() - start) * 1000))
        if progress is not None:
            progress(1)
    return scored


def _prf(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float, float]:
    true_positive = float((predicted & actual).sum())
    precision = true_positive / predicted.sum() if predicted.sum() else 0.0
    recall = true_positive / actual.sum() if actual.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def report(scored: Sequence[ScoredQuery], thresholds: Thresholds) -> RetrievalReport:
    in_scope = [s for s in scored if not s.query.out_of_scope]
    ranks = [s.rank() for s in in_scope]
    count = max(len(in_scope), 1)
    scores = np.array([s.top_score for s in scored])
    actual = np.array([s.query.out_of_scope for s in scored])
    precision, recall, f1 = _prf(scores < thresholds.answer, actual)
    latencies = np.array([s.ms for s in scored]) if scored else np.zeros(1)
    return RetrievalReport(
        n=len(scored),
        recall_at_1=sum(r == 1 for r in ranks) / count,
        recall_at_5=sum(r is not None and r <= 5 for r in ranks) / count,
        mrr=sum(1 / r for r in ranks if r is not None) / count,
        oos_precision=precision,
        oos_recall=recall,
        oos_f1=f1,
        p50_ms=float(np.percentile(latencies, 50)),
        p95_ms=float(np.percentile(latencies, 95)),
    )


class CalibrationError(ValueError):
    """The labelled queries cannot support a calibration."""


def calibrate(scored: Sequence[ScoredQuery], source: str) -> Thresholds:
    """Fit the policy thresholds to labelled queries.

    `answer` maximises out-of-scope F1 (queries below it are not answered); `clarify` is
    the highest score under `answer` below which at least HANDOFF_PRECISION of queries are
    really out of scope, so a handoff is rarely a question the FAQ could have answered.
    """
    scores = np.array([s.top_score for s in scored])
    actual = np.array([s.query.out_of_scope for s in scored])
    if actual.all() or not actual.any():
        raise CalibrationError(
            "calibration needs both in-scope queries and out-of-scope ones "
            '(lines with "relevant": [])'
        )
    values = np.unique(scores)
    # Candidate cuts halfway between neighbouring observed scores, plus both ends.
    cuts = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    f1s = np.array([_prf(scores < cut, actual)[2] for cut in cuts])
    answer = float(cuts[int(np.argmax(f1s))])
    clarify = float(cuts[0])
    for cut in cuts[cuts <= answer]:
        precision = _prf(scores < cut, actual)[0]
        if (scores < cut).any() and precision >= HANDOFF_PRECISION:
            clarify = float(cut)
    return Thresholds(
        answer=round(answer, 4), clarify=round(min(clarify, answer), 4), calibrated_from=source
    )
