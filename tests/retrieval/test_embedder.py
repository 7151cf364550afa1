"""The embedder: encode_with_layers gives retrieval's vectors unchanged, plus layer states."""

from __future__ import annotations

import numpy as np

from retrieval.embedder import Embedder

TEXTS = [
    "where is my parcel?",
    "This is the third time I've asked and nobody answers. Ridiculous.",
    "thanks, that fixed it!",
    "",
    "a",
]


def test_encode_with_layers_keeps_the_retrieval_vectors_bit_identical(embedder: Embedder) -> None:
    before = embedder.encode(TEXTS)
    vectors, _ = embedder.encode_with_layers(TEXTS, [4, 5, 6])
    assert vectors.dtype == np.float32
    assert np.array_equal(vectors, before)
    assert np.array_equal(embedder.encode(TEXTS), before)  # asking once changes nothing later
    # One text alone (how the brain embeds a question) pads differently: compare like with like.
    alone = embedder.encode_with_layers(TEXTS[:1], [6])[0][0]
    assert np.array_equal(alone, embedder.encode_query(TEXTS[0]))


def test_encode_with_layers_pools_each_layer_normalised(embedder: Embedder) -> None:
    _, states = embedder.encode_with_layers(TEXTS, [1, 6])
    assert states.shape == (len(TEXTS), 2, 384)
    assert np.allclose(np.linalg.norm(states, axis=2), 1.0, atol=1e-5)
    # The last layer mean-pooled and normalised is the sentence vector MiniLM serves.
    assert np.allclose(states[:, 1], embedder.encode(TEXTS), atol=1e-5)
    empty_vectors, empty_states = embedder.encode_with_layers([], [4, 5])
    assert empty_vectors.shape == (0, 384) and empty_states.shape == (0, 2, 384)
