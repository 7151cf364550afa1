"""Answer quality metrics: token-F1, ROUGE-L, citation accuracy, handoff rate.

Token-F1 and ROUGE-L compare a generated answer with a reference answer after SQuAD-style
normalisation (lower case, no punctuation, no articles), so "[1]" markers and casing do
not count. Citation accuracy: the first passage the answer cites is the one the reference
answer was grounded in. A handoff is an answer that says it cannot help and offers a person.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from brain.evaluation.metrics import rouge_l, token_f1
from brain.prompt import cited_numbers, says_it_does_not_know

__all__ = ["cites_correctly", "is_handoff", "rouge_l", "score_answers", "token_f1"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))
_CITATION_MARK = re.compile(r"\[\d{1,2}\]")


def is_handoff(text: str) -> bool:
    """An answer that hands off instead of answering (the serving rule)."""
    return says_it_does_not_know(text)


def cites_correctly(answer: str, passage_ids: Sequence[str], expected_id: str) -> bool:
    """True if the first cited passage number points at `expected_id`."""
    numbers = [n for n in cited_numbers(answer) if 1 <= n <= len(passage_ids)]
    return bool(numbers) and passage_ids[numbers[0] - 1] == expected_id


@dataclass(frozen=True, slots=True)
class AnswerScores:
    """Mean scores over a set of answers; `citation_accuracy` over those with a source."""

    n: int
    token_f1: float
    rouge_l: float
    citation_accuracy: float
    handoff_rate: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "token_f1": round(self.token_f1, 4),
            "rouge_l": round(self.rouge_l, 4),
            "citation_accuracy": round(self.citation_accuracy, 4),
            "handoff_rate": round(self.handoff_rate, 4),
        }


def score_answers(
    predictions: Sequence[str],
    references: Sequence[str],
    passage_ids: Sequence[Sequence[str]],
    expected_sources: Sequence[str | None],
) -> AnswerScores:
    """Score predictions against references; `expected_sources[i]` None = nothing to cite."""
    count = len(predictions)
    if count == 0:
        return AnswerScores(0, 0.0, 0.0, 0.0, 0.0)
    cited = [
        cites_correctly(p, ids, source)
        for p, ids, source in zip(predictions, passage_ids, expected_sources, strict=True)
        if source is not None
    ]
    return AnswerScores(
        n=count,
        token_f1=sum(map(token_f1, predictions, references)) / count,
        rouge_l=sum(map(rouge_l, predictions, references)) / count,
        citation_accuracy=sum(cited) / len(cited) if cited else 0.0,
        handoff_rate=sum(map(is_handoff, predictions)) / count,
    )
