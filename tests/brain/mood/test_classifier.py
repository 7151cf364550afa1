"""The mood classifier head: saved and loaded, read from vectors, the bundled default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brain.mood.classifier import (
    DEFAULT_DIR,
    TOP_LAYER_KIND,
    VECTOR_KIND,
    ClassifierLoadError,
    MoodClassifier,
    MoodThresholds,
    TopLayer,
    default_anger_label,
    same_embedder,
    unpadded,
)
from retrieval.embedder import DEFAULT_EMBEDDING_MODEL, Embedder


def two_label_head(dimension: int = 8) -> MoodClassifier:
    """'anger' along the first axis, 'calm' along the second."""
    weights = np.zeros((2, dimension), dtype=np.float32)
    weights[0, 0] = weights[1, 1] = 10.0
    return MoodClassifier(
        labels=("anger", "calm"),
        weights=weights,
        bias=np.zeros(2, dtype=np.float32),
        embedder="tiny",
        anger_label="anger",
        positive=frozenset({"calm"}),
        negative=frozenset({"anger"}),
        thresholds=MoodThresholds(0.9, 0.6, "tests"),
    )


VECTOR_BUNDLE = Path(__file__).resolve().parents[2] / "fixtures" / "mood-vector-bundle"


def tiny_top_layer_classifier(hidden: int = 8) -> MoodClassifier:
    """A randomly initialised BERT layer (float16-exact weights) + head, and a gate."""
    import torch
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    config = {
        "hidden_size": hidden,
        "num_attention_heads": 2,
        "intermediate_size": 16,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
    }
    torch.manual_seed(0)
    layer = BertLayer(BertConfig(**config))  # type: ignore[no-untyped-call]
    weights = {
        name: w.detach().numpy().astype(np.float16).astype(np.float32)
        for name, w in layer.state_dict().items()
    }
    head = two_label_head(hidden)
    return MoodClassifier(
        labels=head.labels,
        weights=head.weights,
        bias=head.bias,
        embedder="tiny",
        anger_label="anger",
        positive=head.positive,
        negative=head.negative,
        thresholds=head.thresholds,
        gate_weights=np.ones(hidden, dtype=np.float32),
        gate_bias=0.5,
        top_layer=TopLayer(config, weights),
    )


def test_a_top_layer_bundle_round_trips(tmp_path: Path) -> None:
    classifier = tiny_top_layer_classifier()
    rng = np.random.default_rng(0)
    states = [rng.standard_normal((n, 8)).astype(np.float32) for n in (3, 7)]
    vectors = rng.standard_normal((2, 8)).astype(np.float32)
    classifier.save(tmp_path / "top")
    metadata = (tmp_path / "top" / "classifier.json").read_text()
    assert f'"kind": "{TOP_LAYER_KIND}"' in metadata
    loaded = MoodClassifier.load(tmp_path / "top", version="v2")
    assert loaded.kind == TOP_LAYER_KIND and loaded.needs_states and loaded.dimension == 8
    np.testing.assert_allclose(
        loaded.probabilities(vectors, states), classifier.probabilities(vectors, states), atol=1e-6
    )
    # Batched (padded, masked) and one message at a time agree.
    one = loaded.read(vectors[1], states[1])
    assert dict(one.scores) == pytest.approx(
        dict(zip(loaded.labels, loaded.probabilities(vectors, states)[1].tolist(), strict=True)),
        abs=1e-4,
    )
    assert one.emotional == pytest.approx(1 / (1 + np.exp(-(vectors[1].sum() + 0.5))), abs=1e-4)
    with pytest.raises(ValueError, match="token states"):
        loaded.probabilities(vectors)


def test_unpadded_drops_the_padding() -> None:
    states = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    masks = np.array([[1, 1, 0], [1, 1, 1]])
    first, second = unpadded(list(states), list(masks))
    assert first.shape == (2, 2) and second.shape == (3, 2)


def test_a_bundle_from_before_kinds_loads_and_reads_its_vectors() -> None:
    assert "kind" not in (VECTOR_BUNDLE / "classifier.json").read_text()
    old = MoodClassifier.load(VECTOR_BUNDLE)
    assert old.kind == VECTOR_KIND and not old.needs_states and old.dimension == 384
    angry = old.weights[old.labels.index(old.anger_label)]
    mood = old.read(angry / np.linalg.norm(angry))
    assert dict(mood.scores)[old.anger_label] == max(p for _, p in mood.scores)


def test_read_gives_probabilities_anger_and_sentiment() -> None:
    head = two_label_head()
    angry = np.eye(8, dtype=np.float32)[0]
    mood = head.read(angry)
    assert mood.label == "anger"
    assert mood.anger > 0.99 and mood.sentiment < -0.99
    assert sum(p for _, p in mood.scores) == pytest.approx(1.0, abs=1e-3)
    assert head.read(np.eye(8, dtype=np.float32)[1]).sentiment > 0.99
    assert head.predict(np.eye(8, dtype=np.float32)[:2]) == ["anger", "calm"]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    head = two_label_head()
    head.save(tmp_path / "head")
    loaded = MoodClassifier.load(tmp_path / "head", version="v3")
    assert loaded.labels == head.labels and loaded.version == "v3"
    assert loaded.thresholds == head.thresholds
    np.testing.assert_array_equal(loaded.weights, head.weights)


def test_a_broken_directory_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ClassifierLoadError, match="cannot load the mood classifier"):
        MoodClassifier.load(tmp_path)
    head = two_label_head()
    head.save(tmp_path / "head")
    text = (tmp_path / "head" / "classifier.json").read_text()
    (tmp_path / "head" / "classifier.json").write_text(
        text.replace('"anger_label": "anger"', '"anger_label": "rage"')
    )
    with pytest.raises(ClassifierLoadError, match="'rage' is not one of"):
        MoodClassifier.load(tmp_path / "head")


def test_label_vocabulary_is_generic() -> None:
    assert default_anger_label(["joy", "Anger"]) == "Anger"
    assert default_anger_label(["joy", "sadness"]) is None
    assert same_embedder("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
    assert not same_embedder("all-MiniLM-L6-v2", "all-mpnet-base-v2")


def test_the_bundled_classifier_ships_with_the_package() -> None:
    bundled = MoodClassifier.load(DEFAULT_DIR)
    assert bundled.anger_label in bundled.labels and len(bundled.labels) >= 2
    assert same_embedder(bundled.embedder, DEFAULT_EMBEDDING_MODEL)
    assert bundled.dimension == 384
    assert 0 < bundled.thresholds.sustained <= bundled.thresholds.strong < 1


@pytest.mark.slow
def test_the_bundled_classifier_reads_real_messages(embedder: Embedder) -> None:
    bundled = MoodClassifier.load(DEFAULT_DIR)
    furious = "This is the third time my order is late and nobody answers. I am furious!"
    happy = "Thank you so much, the new boots arrived early and they are wonderful!"
    encoding = embedder.encode_with_states([furious, happy])
    states = unpadded(encoding.states, encoding.masks)
    angry = bundled.read(encoding.vectors[0], states[0] if bundled.needs_states else None)
    glad = bundled.read(encoding.vectors[1], states[1] if bundled.needs_states else None)
    assert angry.label == bundled.anger_label and angry.anger >= bundled.thresholds.strong
    assert glad.anger < bundled.thresholds.sustained and glad.sentiment > 0 > angry.sentiment
