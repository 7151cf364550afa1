"""Retrieval evaluation and threshold calibration on labelled query files.

A query line is `{"query", "relevant": [ids]}`; an empty `relevant` marks an out-of-scope
question the bot must not answer from the FAQ. A line may carry the conversation so far,
`"history": [{"role": "user"|"agent"|"assistant", "content": text}, ...]` (oldest first):
the query is then searched in that context, as in a live chat. "Predicted out of scope"
means the confidence (retrieval.confidence) is below the answer threshold, which is
exactly when the policy does not answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.confidence import (
    FEATURES,
    NEIGHBOUR_FEATURES,
    LabelledExamples,
    Thresholds,
    features,
    fit_model,
    neighbour_features,
)
from retrieval.embedder import Vectors
from retrieval.faq import FaqFormatError, read_json_lines
from retrieval.index import FaqHit, SearchMode
from retrieval.retriever import Retriever

# Fewer labelled queries than this of either kind fit no model: defaults serve instead.
# The usual rule for a logistic regression, 10 events per estimated parameter (Peduzzi et
# al. 1996): with fewer, where in-scope and out-of-scope questions overlap is decided by a
# handful of queries, and the thresholds move with each one.
EVENTS_PER_PARAMETER = 10
MIN_PER_KIND = EVENTS_PER_PARAMETER * (len(FEATURES) + 1)
# The same rule for a model that also reads the question's labelled neighbours.
MIN_PER_KIND_NEIGHBOURS = EVENTS_PER_PARAMETER * (len(FEATURES) + len(NEIGHBOUR_FEATURES) + 1)
FOLDS = 5
CLARIFY_OPTIONS = 3  # entries the clarifying menu offers (brain.pipeline shows as many)
# The clarifying menu must hold the right entry for at least this share of those shown it.
MENU_PRECISION = 0.5


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
    # The question's own vector from the retrieval embedder (None: not kept); calibration
    # compares it with the other labelled questions (retrieval.confidence.NEIGHBOUR_FEATURES).
    vector: Vectors | None = None

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
        hits, vector = retriever.search_with_query_vector(
            query.query, k=k, mode=mode, history=history
        )
        ms = (time.perf_counter() - start) * 1000
        scored.append(ScoredQuery(query, hits, ms, vector))
        if progress is not None:
            progress(1)
    return scored


def _prf(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float, float]:
    true_positive = float((predicted & actual).sum())
    precision = true_positive / predicted.sum() if predicted.sum() else 0.0
    recall = true_positive / actual.sum() if actual.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def report(
    scored: Sequence[ScoredQuery],
    thresholds: Thresholds,
    predicted_oos: Sequence[bool] | None = None,
) -> RetrievalReport:
    """Metrics of searched queries. A query is predicted out of scope when the policy would
    not answer it: its confidence is under `thresholds.answer`, or as `predicted_oos` says
    (one flag per query: what cross-validated calibration predicted for it)."""
    in_scope = [s for s in scored if not s.query.out_of_scope]
    ranks = [s.rank() for s in in_scope]
    count = max(len(in_scope), 1)
    actual = np.array([s.query.out_of_scope for s in scored], dtype=bool)
    if predicted_oos is None:
        predicted = np.array([thresholds.confidence(s.hits) < thresholds.answer for s in scored])
    else:
        predicted = np.asarray(predicted_oos, dtype=bool)
    precision, recall, f1 = _prf(predicted.astype(bool), actual)
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


def _cuts(values: np.ndarray) -> np.ndarray:
    """Candidate thresholds halfway between neighbouring observed values, plus both ends."""
    values = np.unique(values)
    return np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])


def choose_thresholds(
    confidence: np.ndarray, actual_oos: np.ndarray, offered: np.ndarray
) -> tuple[float, float]:
    """(answer, clarify) on a confidence. `answer` maximises out-of-scope F1 (queries below
    it are not answered). `clarify` is the lowest cut under `answer` for which the menu
    still holds the right entry (`offered`: among the first CLARIFY_OPTIONS hits) for at
    least MENU_PRECISION of the queries between the two: a menu is shown only where it
    usually helps, and the band is as wide as the data says menus help."""
    cuts = _cuts(confidence)
    f1s = np.array([_prf(confidence < cut, actual_oos)[2] for cut in cuts])
    answer = float(cuts[int(np.argmax(f1s))])
    clarify = answer
    for cut in cuts[cuts < answer]:
        band = (confidence >= cut) & (confidence < answer)
        if band.any() and offered[band].mean() >= MENU_PRECISION:
            clarify = float(cut)
            break
    return answer, clarify


def _folds(actual_oos: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per query, stratified: each fold gets its share of both kinds."""
    rng = np.random.default_rng(seed)
    assignment = np.zeros(len(actual_oos), dtype=int)
    for kind in (True, False):
        members = np.flatnonzero(actual_oos == kind)
        rng.shuffle(members)
        assignment[members] = np.arange(len(members)) % folds
    return assignment


def _neighbour_vectors(scored: Sequence[ScoredQuery]) -> np.ndarray | None:
    """The questions' vectors, if every one was kept and each kind has enough queries
    (MIN_PER_KIND_NEIGHBOURS) for a model that reads neighbours; else None."""
    vectors = [s.vector for s in scored]
    out = sum(s.query.out_of_scope for s in scored)
    if min(out, len(scored) - out) < MIN_PER_KIND_NEIGHBOURS or any(v is None for v in vectors):
        return None
    return np.stack([np.asarray(v, dtype=np.float32) for v in vectors])


def _widened(
    rows: np.ndarray,
    vectors: np.ndarray | None,
    actual_oos: np.ndarray,
    members: np.ndarray,
    references: np.ndarray,
) -> np.ndarray:
    """The feature rows of queries `members` (sorted indices), widened by their
    NEIGHBOUR_FEATURES among the labelled queries `references` (sorted indices; a query
    is never its own neighbour) when the vectors are kept."""
    chosen: np.ndarray = rows[members]
    if vectors is None:
        return chosen
    position = np.minimum(np.searchsorted(references, members), len(references) - 1)
    exclude = np.where(references[position] == members, position, -1)
    extra = neighbour_features(
        vectors[members], vectors[references], actual_oos[references], exclude
    )
    return np.hstack([chosen, extra])


def _out_of_fold(
    rows: np.ndarray, vectors: np.ndarray | None, actual_oos: np.ndarray, folds: int, seed: int
) -> np.ndarray:
    """P(in scope) of every query from a model fitted on the other folds (whose labelled
    questions are also the only neighbours it reads)."""
    assignment = _folds(actual_oos, folds, seed)
    probabilities = np.zeros(len(rows))
    for fold in range(folds):
        test, train = np.flatnonzero(assignment == fold), np.flatnonzero(assignment != fold)
        model = fit_model(_widened(rows, vectors, actual_oos, train, train), ~actual_oos[train])
        probabilities[test] = model.probabilities(_widened(rows, vectors, actual_oos, test, train))
    return probabilities


def too_little_data(scored: Sequence[ScoredQuery]) -> str | None:
    """Why these labelled queries are too few to calibrate on, or None if they suffice."""
    out = sum(s.query.out_of_scope for s in scored)
    inside = len(scored) - out
    if min(inside, out) >= MIN_PER_KIND:
        return None
    return (
        f"too few labelled queries to calibrate: {inside} in scope and {out} out of scope "
        f"(at least {MIN_PER_KIND} of each needed); conservative defaults"
    )


def calibrate(
    scored: Sequence[ScoredQuery],
    source: str,
    folds: int = FOLDS,
    seed: int = 0,
    model: str = "",
) -> Thresholds:
    """Fit the confidence model and the policy thresholds to labelled queries.

    The model (retrieval.confidence) is a logistic regression over features of the hits,
    in scope vs out of scope, and, when the queries' vectors were kept and each kind has
    MIN_PER_KIND_NEIGHBOURS queries, over each one's neighbours among the other labelled
    queries; those are then kept with the thresholds (`LabelledExamples`, embedded by the
    retrieval model named `model`). Thresholds are chosen (`choose_thresholds`) on
    cross-validated probabilities (each query's from a model fitted on the other folds),
    so they are set for questions the model has not seen; the stored model is then
    fitted on every query. Too few queries (`too_little_data`): conservative defaults on
    the best score, and the note says so.
    """
    actual = np.array([s.query.out_of_scope for s in scored], dtype=bool)
    if actual.all() or not actual.any():
        raise CalibrationError(
            "calibration needs both in-scope queries and out-of-scope ones "
            '(lines with "relevant": [])'
        )
    reason = too_little_data(scored)
    if reason is not None:
        return Thresholds(note=reason)
    rows = np.array([features(s.hits) for s in scored])
    vectors = _neighbour_vectors(scored)
    probabilities = _out_of_fold(rows, vectors, actual, folds, seed)
    offered = np.array([(s.rank() or CLARIFY_OPTIONS + 1) <= CLARIFY_OPTIONS for s in scored])
    answer, clarify = choose_thresholds(probabilities, actual, offered)
    band = (probabilities >= clarify) & (probabilities < answer)
    f1 = _prf(probabilities < answer, actual)[2]
    figures = {
        "queries": float(len(scored)),
        "out_of_scope": float(actual.sum()),
        "cv_oos_f1": round(f1, 4),
        "answered": round(float((probabilities >= answer).mean()), 4),
        "clarified": round(float(band.mean()), 4),
        "handed_off": round(float((probabilities < clarify).mean()), 4),
        "clarified_right_entry_offered": round(float(offered[band].mean()) if band.any() else 0, 4),
    }
    note = (
        f"{folds}-fold cross-validated on {len(scored)} queries ({int(actual.sum())} out of "
        f"scope): answer maximises out-of-scope F1 ({f1:.3f}); clarify widens the menu band "
        f"as far as the menu holds the right entry for {MENU_PRECISION:.0%} of it. Of these "
        "queries "
        f"{figures['answered']:.0%} would be answered, {figures['clarified']:.0%} offered a "
        f"menu (the right entry among the {CLARIFY_OPTIONS} options for "
        f"{figures['clarified_right_entry_offered']:.0%} of those), "
        f"{figures['handed_off']:.0%} handed off."
    )
    everyone = np.arange(len(scored))
    examples = (
        None
        if vectors is None
        else LabelledExamples(tuple(s.query.query for s in scored), actual, vectors, model)
    )
    return Thresholds(
        answer=round(answer, 4),
        clarify=round(clarify, 4),
        calibrated_from=source,
        model=fit_model(_widened(rows, vectors, actual, everyone, everyone), ~actual),
        note=note,
        figures=figures,
        examples=examples,
    )


def cross_validated_oos(
    scored: Sequence[ScoredQuery], folds: int = FOLDS, seed: int = 0
) -> list[bool] | None:
    """Whether each query would not be answered, by thresholds calibrated on the other
    folds (None when the queries are too few to calibrate on): honest out-of-scope
    figures on the same labelled queries, none judged by thresholds fitted on itself."""
    actual = np.array([s.query.out_of_scope for s in scored], dtype=bool)
    if actual.all() or not actual.any():
        return None
    assignment = _folds(actual, folds, seed + 1)
    predicted = np.zeros(len(scored), dtype=bool)
    for fold in range(folds):
        fit = [s for s, f in zip(scored, assignment, strict=True) if f != fold]
        if too_little_data(fit) is not None:
            return None
        thresholds = calibrate(fit, "cross-validation", folds, seed)
        for i in np.flatnonzero(assignment == fold):
            query = scored[int(i)]
            # Neighbours among this fit's labelled queries only, never the stored ones.
            neighbours = (
                thresholds.examples.neighbours(query.vector)
                if thresholds.examples is not None and query.vector is not None
                else None
            )
            predicted[i] = thresholds.confidence(query.hits, neighbours) < thresholds.answer
    return [bool(p) for p in predicted]
