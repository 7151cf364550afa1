"""A retriever: the embedder and the index together, one call from text to hits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.embedder import Embedder, Vectors
from retrieval.index import ContextTurn, FaqHit, FaqIndex, SearchMode

# How many recent turns (the customer's and the bot's or agent's) a question is read with.
CONTEXT_TURNS = 4


class Retriever:
    """Embeds a query and searches the FAQ index. The index can be swapped at run time."""

    def __init__(self, embedder: Embedder, index: FaqIndex, top_k: int = 5) -> None:
        self.embedder = embedder
        self.index = index
        self.top_k = top_k

    def search(
        self,
        text: str,
        k: int | None = None,
        mode: SearchMode = "hybrid",
        history: Sequence[tuple[str, str]] = (),
    ) -> list[FaqHit]:
        """Hits for `text`, read in the context of `history` (earlier turns as (role,
        text), role "user" for the customer; oldest first; the last CONTEXT_TURNS count)."""
        return self.search_with_vector(text, k, mode, history)[0]

    def search_with_vector(
        self,
        text: str,
        k: int | None = None,
        mode: SearchMode = "hybrid",
        history: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[FaqHit], Vectors]:
        """`search`, and the normalised sentence vector of `text` it computed, so other
        readers of the message (the mood classifier) need no second encoder pass."""
        if not text.strip():
            return [], np.zeros(self.embedder.dimension, dtype=np.float32)
        turns = [(role, turn) for role, turn in history[-CONTEXT_TURNS:] if turn.strip()]
        vectors = self.embedder.encode([text, *(turn for _, turn in turns)])
        context = [
            ContextTurn(turn, vector, customer=role == "user")
            for (role, turn), vector in zip(turns, vectors[1:], strict=True)
        ]
        hits = self.index.search(text, vectors[0], k=k or self.top_k, mode=mode, context=context)
        return hits, vectors[0]
