"""Content gaps: what customers asked that the knowledge does not cover, grouped by meaning,
each with a draft FAQ entry for staff to edit and approve.

Questions are embedded with the product's own embedder and clustered agglomeratively
(average linkage) under a cosine distance threshold: two groups merge while their
questions are, on average, closer than `threshold`. The number of gaps follows from the
questions, not from a setting. Biggest gaps first; singletons last.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

DEFAULT_THRESHOLD = 0.4  # cosine distance (1 - similarity): groups merge while closer on average
MAX_QUESTIONS = 5_000  # newest questions clustered (average linkage is quadratic in memory)


class TextEmbedder(Protocol):
    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


@dataclass(slots=True)
class Gap:
    """One topic customers asked about and the bot could not answer."""

    questions: list[dict[str, Any]]  # the gap questions as recorded (question, why, ...)
    central: str  # the question nearest the topic's centre
    draft_question: str = ""
    draft_alternates: list[str] = field(default_factory=list)
    draft_answer: str = ""

    @property
    def size(self) -> int:
        return len(self.questions)

    @property
    def agent_answers(self) -> list[str]:
        return [q["agent_answer"] for q in self.questions if q.get("agent_answer")]

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "questions": self.questions,
            "central": self.central,
            "draft": {
                "question": self.draft_question,
                "alternates": self.draft_alternates,
                "answer": self.draft_answer,
            },
        }


def cluster_labels(
    vectors: npt.NDArray[np.float32], threshold: float = DEFAULT_THRESHOLD
) -> npt.NDArray[np.int_]:
    """A cluster label per (normalized) vector."""
    if len(vectors) < 2:
        return np.zeros(len(vectors), dtype=np.int_)
    from sklearn.cluster import (  # type: ignore[import-untyped]  # heavy: only when clustering
        AgglomerativeClustering,
    )

    model = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=threshold
    )
    labels: npt.NDArray[np.int_] = model.fit_predict(vectors)
    return labels


def find_gaps(
    questions: Sequence[dict[str, Any]],
    embedder: TextEmbedder,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[Gap]:
    """Group gap questions by meaning and draft an FAQ entry for each group."""
    questions = [q for q in questions if str(q.get("question", "")).strip()][:MAX_QUESTIONS]
    if not questions:
        return []
    vectors = embedder.encode([str(q["question"]) for q in questions])
    labels = cluster_labels(vectors, threshold)
    gaps = []
    for label in Counter(labels.tolist()):
        members = np.flatnonzero(labels == label)
        centre = vectors[members].mean(axis=0)
        order = members[np.argsort(-(vectors[members] @ centre))]
        group = [questions[i] for i in order]
        gaps.append(draft(Gap(group, str(group[0]["question"]))))
    gaps.sort(key=lambda gap: (-gap.size, gap.central))
    return gaps


def draft(gap: Gap) -> Gap:
    """Fill the draft entry: the most central question, the others (once each) as
    alternates, and the answer an agent gave (the most common one) when there is one."""
    seen = {gap.central.strip().lower()}
    alternates = []
    for item in gap.questions[1:]:
        text = str(item["question"]).strip()
        if text.lower() not in seen:
            seen.add(text.lower())
            alternates.append(text)
    gap.draft_question = gap.central.strip()
    gap.draft_alternates = alternates[:20]
    answers = Counter(gap.agent_answers)
    gap.draft_answer = answers.most_common(1)[0][0] if answers else ""
    return gap


def purity(labels: Sequence[int], truth: Sequence[str]) -> float:
    """Share of items whose cluster's most common true label is their own."""
    by_cluster: dict[int, Counter[str]] = {}
    for label, true in zip(labels, truth, strict=True):
        by_cluster.setdefault(label, Counter())[true] += 1
    agreeing = sum(counts.most_common(1)[0][1] for counts in by_cluster.values())
    return agreeing / len(truth) if truth else 0.0
