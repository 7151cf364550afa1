"""Scores of held-out answers in a training run: token-F1, ROUGE-L, citations, handoffs.

Token-F1 and ROUGE-L are brain.evaluation.metrics' (the ones `deskmate eval answers`
reports). Citation accuracy: among the passages the answer cites is the one the reference
was grounded in (as `eval answers` counts a reply citing a relevant entry). A handoff is
an answer that says it cannot help (brain.prompt's rule, as serving judges it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from brain.evaluation.metrics import rouge_l, token_f1
from brain.prompt import cited_numbers, says_it_does_not_know

__all__ = ["cites_correctly", "is_handoff", "rouge_l", "score_answers", "token_f1"]


def is_handoff(text: str) -> bool:
    """An answer that hands off instead of answering (the serving rule)."""
    return says_it_does_not_know(text)


def cites_correctly(answer: str, passage_ids: Sequence[str], expected_id: str) -> bool:
    """True if one of the passages `answer` cites is `expected_id`."""
    numbers = [n for n in cited_numbers(answer) if 1 <= n <= len(passage_ids)]
    return any(passage_ids[number - 1] == expected_id for number in numbers)


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
