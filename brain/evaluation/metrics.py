"""Answer quality metrics shared by `deskmate eval answers`, the bench and training.

Token-F1 is SQuAD's: the harmonic mean of token precision and recall after lower-casing
and dropping punctuation and articles. ROUGE-L is the longest-common-subsequence F-measure
from `rouge-score`. Citations ([1]) are removed first: they are not words of the answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache
from typing import Any

from brain.prompt import strip_citations

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def answer_tokens(text: str) -> list[str]:
    """Normalised words of an answer: lower case, no citations, punctuation or articles."""
    text = strip_citations(text).lower().translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between an answer and a reference answer (0..1)."""
    predicted, expected = answer_tokens(prediction), answer_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    return counts_f1(Counter(predicted), Counter(expected))


def counts_f1(predicted: Counter[str], expected: Counter[str]) -> float:
    """Token F1 of two token counts (`token_f1` on texts already tokenised; 0 when they
    share nothing)."""
    common = sum((predicted & expected).values())
    if common == 0:
        return 0.0
    precision = common / sum(predicted.values())
    recall = common / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure between an answer and a reference answer (0..1)."""
    prediction = strip_citations(prediction)
    return float(_scorer().score(reference, prediction)["rougeL"].fmeasure)
