"""End-to-end answer evaluation: labelled questions through the whole brain.

`deskmate eval answers` runs each labelled query as a conversation of its own through
`Brain.handle` (retrieval, policy, answer backend), starting from the query's `history`
(written through the conversation store, as a live chat would have it), and compares
the reply with the reference answer: token-F1 and ROUGE-L (unanswered in-scope questions
score 0), citation accuracy (answered, citing at least one relevant entry), and how
often the bot hands off or clarifies when it should answer, or answers when it should
not.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from brain.evaluation.metrics import rouge_l, token_f1
from brain.pipeline import Brain
from brain.types import Inbound, Turn
from retrieval.evaluation import LabelledQuery


@dataclass(frozen=True, slots=True)
class AnswerReport:
    n: int
    answered: float
    clarified: float
    handed_off: float
    token_f1: float
    rouge_l: float
    citation_accuracy: float
    handoff_in_scope: float
    oos_answered: float
    p50_ms: float
    p95_ms: float
    # Share of the answers by what wrote them: the model's version, or "quote (fallback
    # from VERSION: REASON)" where the answer backend quoted instead (REASON `long_answer`:
    # a long written answer, quoted whole by design; see brain.answering.grounded).
    answered_by: dict[str, float] = field(default_factory=dict)
    # In-scope queries with a reference `answer` (what token-F1 and ROUGE-L are over).
    with_reference: int = 0

    def to_json(self) -> dict[str, float | int | dict[str, float]]:
        return {
            "n": self.n,
            "answered": self.answered,
            "clarified": self.clarified,
            "handed_off": self.handed_off,
            "token_f1": self.token_f1,
            "rouge_l": self.rouge_l,
            "citation_accuracy": self.citation_accuracy,
            "handoff_in_scope": self.handoff_in_scope,
            "oos_answered": self.oos_answered,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "answered_by": self.answered_by,
            "with_reference": self.with_reference,
        }


def _turn(role: str, text: str) -> Turn:
    """A history turn as the conversation would hold it (the bot's earlier turns answered)."""
    return Turn(role, text, action="answer" if role == "assistant" else None)  # type: ignore[arg-type]


def _rate(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if flags else 0.0


async def evaluate_answers(
    brain: Brain,
    queries: Sequence[LabelledQuery],
    progress: Callable[[int], None] | None = None,
) -> AnswerReport:
    """Ask every query in its own conversation and score the replies."""
    run = uuid.uuid4().hex[:8]
    actions, latencies = [], []
    f1s, rouges, cited, handoffs, oos_answered = [], [], [], [], []
    writers: Counter[str] = Counter()
    for number, query in enumerate(queries):
        inbound = Inbound("console", f"eval:{run}:{number}", "eval", str(number), query.query)
        if query.history:
            await brain.store.append(inbound, *(_turn(role, text) for role, text in query.history))
        started = time.perf_counter()
        reply = await brain.handle(inbound)
        latencies.append((time.perf_counter() - started) * 1000)
        actions.append(reply.action)
        answered = reply.action == "answer"
        if answered:
            writers[reply.model_version] += 1
        if query.out_of_scope:
            oos_answered.append(answered)
        else:
            handoffs.append(reply.action == "handoff")
            cited.append(answered and any(s.id in query.relevant for s in reply.sources))
            if query.answer is not None:
                f1s.append(token_f1(reply.text, query.answer) if answered else 0.0)
                rouges.append(rouge_l(reply.text, query.answer) if answered else 0.0)
        if progress is not None:
            progress(1)
    timings = np.array(latencies) if latencies else np.zeros(1)
    return AnswerReport(
        n=len(queries),
        answered=_rate([a == "answer" for a in actions]),
        clarified=_rate([a == "clarify" for a in actions]),
        handed_off=_rate([a == "handoff" for a in actions]),
        token_f1=float(np.mean(f1s)) if f1s else 0.0,
        rouge_l=float(np.mean(rouges)) if rouges else 0.0,
        citation_accuracy=_rate(cited),
        handoff_in_scope=_rate(handoffs),
        oos_answered=_rate(oos_answered),
        p50_ms=float(np.percentile(timings, 50)),
        p95_ms=float(np.percentile(timings, 95)),
        with_reference=len(f1s),
        answered_by={version: count / writers.total() for version, count in writers.most_common()},
    )
