"""A retriever: the embedder and the index together, one call from text to hits."""

from __future__ import annotations

from retrieval.embedder import Embedder
from retrieval.index import FaqHit, FaqIndex, SearchMode


class Retriever:
    """Embeds a query and searches the FAQ index. The index can be swapped at run time."""

    def __init__(self, embedder: Embedder, index: FaqIndex, top_k: int = 5) -> None:
        self.embedder = embedder
        self.index = index
        self.top_k = top_k

    def search(self, text: str, k: int | None = None, mode: SearchMode = "hybrid") -> list[FaqHit]:
        if not text.strip():
            return []
        vector = self.embedder.encode_query(text)
        return self.index.search(text, vector, k=k or self.top_k, mode=mode)
