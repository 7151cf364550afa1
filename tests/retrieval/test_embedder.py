"""One encoder pass: the sentence vectors as `encode` gives them, and the last layer's input."""

from __future__ import annotations

import numpy as np

from retrieval.embedder import Embedder
from retrieval.index import FaqIndex
from retrieval.retriever import Retriever

TEXTS = [
    "hello there",
    "This is the third time my order is late and nobody answers. I am furious!",
    "ok",
    "hello there",
    "how do I track my parcel?",
]


def test_encode_with_states_gives_encode_vectors_bit_for_bit(embedder: Embedder) -> None:
    import torch

    encoding = embedder.encode_with_states(TEXTS)
    np.testing.assert_array_equal(encoding.vectors, embedder.encode(TEXTS))
    np.testing.assert_array_equal(
        embedder.encode_with_states([TEXTS[1]]).vectors, embedder.encode([TEXTS[1]])
    )
    # The states are the last layer's input: the model's next-to-last hidden states.
    model = embedder._model[0].auto_model
    for text, states, mask in zip(TEXTS, encoding.states, encoding.masks, strict=True):
        tokens = embedder._model.tokenize([text])
        with torch.no_grad():
            hidden = model(**tokens, output_hidden_states=True).hidden_states[-2][0].numpy()
        assert int(mask.sum()) == len(hidden) and mask[: len(hidden)].all()
        np.testing.assert_allclose(states[: len(hidden)], hidden, atol=1e-4)


def test_search_with_encoding_matches_search_with_vector(
    embedder: Embedder, sample_index: FaqIndex
) -> None:
    history = [("user", "my boots are too small"), ("assistant", "Returns are free.")]
    retriever = Retriever(embedder, sample_index)
    hits, vector = retriever.search_with_vector("can I swap them?", history=history)
    same_hits, encoding = retriever.search_with_encoding("can I swap them?", history=history)
    assert [h.id for h in same_hits] == [h.id for h in hits]
    np.testing.assert_array_equal(encoding.vectors[0], vector)
    assert len(encoding.states) == 1 and encoding.states[0].shape[1] == embedder.dimension
    alone = embedder.encode_with_states(["can I swap them?"])
    np.testing.assert_allclose(
        encoding.states[0][encoding.masks[0].astype(bool)],
        alone.states[0][alone.masks[0].astype(bool)],
        atol=1e-4,
    )
    empty_hits, empty = retriever.search_with_encoding("  ")
    assert empty_hits == [] and empty.states == ()


def test_states_come_from_the_sentence_embedder_when_retrieval_learned_its_own(
    embedder: Embedder, sample_index: FaqIndex
) -> None:
    learned = Embedder()  # stands in for a learned model: another instance
    retriever = Retriever(learned, sample_index, sentence_embedder=embedder)
    _, encoding = retriever.search_with_encoding("where is my parcel?")
    np.testing.assert_array_equal(encoding.vectors[0], embedder.encode_query("where is my parcel?"))
    np.testing.assert_array_equal(
        encoding.states[0], retriever.sentence_encoding("where is my parcel?").states[0]
    )


def test_states_are_each_callers_own_when_threads_share_the_model(embedder: Embedder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"message number {i} about my {'late ' * i}parcel" for i in range(8)]
    alone = [embedder.encode_with_states([t]) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda t: embedder.encode_with_states([t]), texts))
    for one, other in zip(alone, together, strict=True):
        np.testing.assert_array_equal(one.vectors, other.vectors)
        np.testing.assert_allclose(one.states[0], other.states[0], atol=1e-5)
