"""The mood classifier head: saved and loaded, read from vectors, the bundled default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brain.mood.classifier import (
    DEFAULT_DIR,
    ClassifierLoadError,
    MoodClassifier,
    MoodThresholds,
    default_anger_label,
    same_embedder,
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
    vectors = embedder.encode([furious, happy])
    angry, glad = bundled.read(vectors[0]), bundled.read(vectors[1])
    assert angry.label == bundled.anger_label and angry.anger >= bundled.thresholds.strong
    assert glad.anger < bundled.thresholds.sustained and glad.sentiment > 0 > angry.sentiment
