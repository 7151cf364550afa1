"""Answer backends: turn the question and its FAQ hits into the answer text.

`quote` needs no model: it quotes the best entry and names it. Generative backends
(`hf`, `openai`) implement the same protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from brain.types import Turn
from retrieval.index import FaqHit


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    cited: tuple[FaqHit, ...]


class AnswerBackend(Protocol):
    """Writes an answer grounded in `hits`; `version` is recorded with every reply."""

    version: str

    async def answer(
        self, question: str, hits: Sequence[FaqHit], history: Sequence[Turn]
    ) -> Answer: ...


class QuoteBackend:
    """Quotes the best FAQ entry verbatim and cites it as [1]."""

    version = "quote"

    async def answer(
        self, question: str, hits: Sequence[FaqHit], history: Sequence[Turn]
    ) -> Answer:
        best = hits[0]
        return Answer(text=f"{best.entry.answer} [1]", cited=(best,))


class DelayedBackend:
    """Another backend, answering `delay` seconds later: a stand-in for a slow model
    (DESKMATE_ANSWER_DELAY), used to test crash recovery mid-generation."""

    def __init__(self, inner: AnswerBackend, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.version = inner.version

    async def answer(
        self, question: str, hits: Sequence[FaqHit], history: Sequence[Turn]
    ) -> Answer:
        await asyncio.sleep(self.delay)
        return await self.inner.answer(question, hits, history)
