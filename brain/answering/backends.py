"""Answer backends: turn the question and its FAQ hits into the answer text.

`quote` needs no model: it quotes the best entry and names it. Generative backends
(`hf`, `openai`) implement the same protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from brain.types import Turn
from retrieval.index import FaqHit

# Called with the answer's text so far while a generative backend writes it (see
# `GenerativeBackend.answer`); what a channel may show before the reply is final.
PartialCallback = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer and the hits it cites, in citation order ([1] is cited[0]).

    `action` "handoff" means the backend found no answer in the passages (the model
    said it doesn't know): the pipeline hands off with `reason`. `model_version`, when
    set, overrides the backend's version in the transcript (e.g. a quoting fallback).
    """

    text: str
    cited: tuple[FaqHit, ...]
    action: Literal["answer", "handoff"] = "answer"
    reason: str = ""
    model_version: str = ""


class AnswerBackend(Protocol):
    """Writes an answer grounded in `hits`; `version` is recorded with every reply.

    `on_partial`, when given, may be called with the answer's text so far while it is
    written (a backend that cannot stream never calls it); the returned `Answer` is what
    counts and may differ (a quote replacing a generation that failed a guard)."""

    version: str

    async def answer(
        self,
        question: str,
        hits: Sequence[FaqHit],
        history: Sequence[Turn],
        *,
        on_partial: PartialCallback | None = None,
    ) -> Answer: ...

    async def aclose(self) -> None: ...


class QuoteBackend:
    """Quotes the best FAQ entry verbatim and cites it as [1]."""

    version = "quote"

    async def answer(
        self,
        question: str,
        hits: Sequence[FaqHit],
        history: Sequence[Turn],
        *,
        on_partial: PartialCallback | None = None,
    ) -> Answer:
        return quote(hits)

    async def aclose(self) -> None:
        pass


def quote(hits: Sequence[FaqHit], model_version: str = "") -> Answer:
    """The best entry's answer verbatim, cited as [1]."""
    best = hits[0]
    return Answer(text=f"{best.entry.answer} [1]", cited=(best,), model_version=model_version)


class DelayedBackend:
    """Another backend, answering `delay` seconds later: a stand-in for a slow model
    (DESKMATE_ANSWER_DELAY), used to test crash recovery mid-generation."""

    def __init__(self, inner: AnswerBackend, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.version = inner.version

    async def answer(
        self,
        question: str,
        hits: Sequence[FaqHit],
        history: Sequence[Turn],
        *,
        on_partial: PartialCallback | None = None,
    ) -> Answer:
        await asyncio.sleep(self.delay)
        return await self.inner.answer(question, hits, history, on_partial=on_partial)

    async def aclose(self) -> None:
        await self.inner.aclose()
