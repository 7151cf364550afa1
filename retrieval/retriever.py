"""A retriever: the embedder and the index together, one call from text to hits."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from retrieval.embedder import Embedder, Encoding, Vectors
from retrieval.index import ContextTurn, FaqHit, FaqIndex, SearchMode

# How many recent turns (the customer's and the bot's or agent's) a question is read with.
CONTEXT_TURNS = 4


class Retriever:
    """Embeds a query and searches the FAQ index. The index, or the embedder together with
    an index it embedded (`swap`), can be replaced at run time.

    `sentence_embedder` is the model other readers of a message expect its vector from
    (the mood classifier was trained on the base model's): the retrieval embedder unless
    one learned from the FAQ (retrieval.learning) serves.
    """

    def __init__(
        self,
        embedder: Embedder,
        index: FaqIndex,
        top_k: int = 5,
        sentence_embedder: Embedder | None = None,
    ) -> None:
        self._pair = (embedder, index)  # replaced as one, so a search never mixes two
        self.sentence_embedder = sentence_embedder or embedder
        self.top_k = top_k

    @property
    def embedder(self) -> Embedder:
        return self._pair[0]

    @property
    def index(self) -> FaqIndex:
        return self._pair[1]

    @index.setter
    def index(self, index: FaqIndex) -> None:
        self._pair = (self._pair[0], index)

    def swap(self, embedder: Embedder, index: FaqIndex) -> None:
        """Search with another embedder and the index embedded by it, from the next query."""
        if index.model != embedder.name:
            raise ValueError(f"index embedded by {index.model!r}, not by {embedder.name!r}")
        self._pair = (embedder, index)

    def sentence_vector(self, text: str) -> Vectors:
        """`text`'s vector from the sentence embedder (see the class docstring)."""
        return self.sentence_embedder.encode_query(text)

    def sentence_encoding(self, text: str) -> Encoding:
        """`sentence_vector`, and from the same pass the token states that enter the
        sentence embedder's last layer (see `Embedder.encode_with_states`)."""
        return self.sentence_embedder.encode_with_states([text])

    def search(
        self,
        text: str,
        k: int | None = None,
        mode: SearchMode = "hybrid",
        history: Sequence[tuple[str, str]] = (),
        said: Collection[str] = (),
    ) -> list[FaqHit]:
        """Hits for `text`, read in the context of `history` (earlier turns as (role,
        text), role "user" for the customer; oldest first; the last CONTEXT_TURNS count).
        `said`: the entries the latest reply gave, when the bot knows (its own answer's
        sources); any reply's words also tell (`FaqIndex.search`)."""
        return self.search_with_vector(text, k, mode, history, said)[0]

    def search_with_vector(
        self,
        text: str,
        k: int | None = None,
        mode: SearchMode = "hybrid",
        history: Sequence[tuple[str, str]] = (),
        said: Collection[str] = (),
    ) -> tuple[list[FaqHit], Vectors]:
        """`search`, and the normalised sentence vector of `text` from the sentence
        embedder: the one search computed when that is the retrieval embedder, so other
        readers of the message (the mood classifier) need no second encoder pass."""
        hits, encoding, _ = self._search(text, k, mode, history, said, states=False)
        return hits, encoding.vectors[0]

    def search_with_query_vector(
        self,
        text: str,
        k: int | None = None,
        mode: SearchMode = "hybrid",
        history: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[FaqHit], Vectors]:
        """`search`, and `text`'s own vector from the retrieval embedder: the one labelled
        questions are compared in (retrieval.confidence.LabelledExamples)."""
        hits, _, vector = self._search(text, k, mode, history, (), states=False)
        return hits, vector

    def search_with_encoding(
        self,
        text: str,
        k: int | None = None,
        mode: SearchMode = "hybrid",
        history: Sequence[tuple[str, str]] = (),
        said: Collection[str] = (),
    ) -> tuple[list[FaqHit], Encoding]:
        """`search_with_vector`, with `text`'s sentence vector as an `Encoding` that also
        holds the token states entering the sentence embedder's last layer: from the
        search's own pass when the retrieval embedder is the sentence embedder, else from
        the one sentence-embedder pass `search_with_vector` makes anyway."""
        hits, encoding, _ = self._search(text, k, mode, history, said, states=True)
        return hits, encoding

    def _search(
        self,
        text: str,
        k: int | None,
        mode: SearchMode,
        history: Sequence[tuple[str, str]],
        said: Collection[str],
        states: bool,
    ) -> tuple[list[FaqHit], Encoding, Vectors]:
        """Hits, the sentence encoding (see `search_with_encoding`) and `text`'s own vector
        from the retrieval embedder."""
        embedder, index = self._pair
        if not text.strip():
            empty = np.zeros((1, self.sentence_embedder.dimension), dtype=np.float32)
            return [], Encoding(empty, (), ()), np.zeros(embedder.dimension, dtype=np.float32)
        turns = [(role, turn) for role, turn in history[-CONTEXT_TURNS:] if turn.strip()]
        texts = [text, *(turn for _, turn in turns)]
        shared = embedder is self.sentence_embedder
        if shared and states:
            encoding = embedder.encode_with_states(texts)
            vectors = encoding.vectors
            encoding = Encoding(vectors[:1], encoding.states[:1], encoding.masks[:1])
        else:
            vectors = embedder.encode(texts)
            encoding = Encoding(vectors[:1], (), ())
        context = [
            ContextTurn(turn, vector, customer=role == "user")
            for (role, turn), vector in zip(turns, vectors[1:], strict=True)
        ]
        hits = index.search(
            text, vectors[0], k=k or self.top_k, mode=mode, context=context, said=said
        )
        if shared:
            return hits, encoding, vectors[0]
        if states:
            return hits, self.sentence_encoding(text), vectors[0]
        return hits, Encoding(self.sentence_vector(text)[None, :], (), ()), vectors[0]
