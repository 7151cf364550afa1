"""A mood classifier: a linear (logistic regression) head over sentence embeddings.

The head reads the same normalised MiniLM vector retrieval computes for a question, so
classifying a message costs one small matrix product, not a second encoder pass. Saved
as a directory:

    classifier.json   labels, which embedder it expects, the anger label, the labels that
                      count as positive / negative for sentiment, calibrated thresholds
    head.npz          weights (labels x dimension) and bias (labels); the neutral gate's
                      gate_weights (dimension) and gate_bias, when trained with one

Label names come from the training data. Emotion data sets label every text with an
emotion, but most messages to a support desk express none ("how do I track my parcel?"
reads as anger to a head that knows only emotions): the gate, a logistic regression of
emotional (the labelled texts) against neutral customer questions (FAQ questions), scales
anger and sentiment by the probability that the message is emotional at all. Sentiment =
emotional x (probability of the positive labels - that of the negative ones), in [-1, 1].
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from brain.types import Mood

METADATA = "classifier.json"
WEIGHTS = "head.npz"
DEFAULT_DIR = Path(__file__).resolve().parent / "default"  # shipped with the package

# Generic emotion vocabulary: which of a data set's labels escalate, and which count as
# positive or negative for sentiment when training is not told otherwise.
ANGER_LABELS = ("anger", "angry", "frustration", "annoyance", "negative")
POSITIVE_LABELS = frozenset({"joy", "optimism", "love", "happiness", "gratitude", "positive"})
NEGATIVE_LABELS = frozenset(
    {"anger", "angry", "sadness", "fear", "disgust", "frustration", "annoyance", "negative"}
)

Vectors = npt.NDArray[np.float32]


class ClassifierLoadError(RuntimeError):
    """A classifier directory is missing files or holds something else; says which."""


@dataclass(frozen=True, slots=True)
class MoodThresholds:
    """Anger probabilities that hand a conversation to a person: one message at or above
    `strong`, or two customer messages in a row at or above `sustained`."""

    strong: float
    sustained: float
    calibrated_from: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "strong": self.strong,
            "sustained": self.sustained,
            "calibrated_from": self.calibrated_from,
        }


def same_embedder(a: str, b: str) -> bool:
    """Whether two embedding model names mean the same model (hub id or short name)."""
    return a.rsplit("/", 1)[-1].lower() == b.rsplit("/", 1)[-1].lower()


@dataclass(frozen=True)
class MoodClassifier:
    """A softmax head over `embedder`'s normalised sentence vectors."""

    labels: tuple[str, ...]
    weights: Vectors  # (labels, dimension)
    bias: Vectors  # (labels,)
    embedder: str
    anger_label: str
    positive: frozenset[str]
    negative: frozenset[str]
    thresholds: MoodThresholds
    version: str = "base"
    info: Mapping[str, Any] = field(default_factory=dict)
    gate_weights: Vectors | None = None  # (dimension,): emotional vs neutral, logistic
    gate_bias: float = 0.0

    @property
    def dimension(self) -> int:
        return int(self.weights.shape[1])

    def probabilities(self, vectors: Vectors) -> Vectors:
        """(n, labels) probabilities for (n, dimension) vectors."""
        logits = vectors @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities: Vectors = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return probabilities

    def emotional(self, vectors: Vectors) -> Vectors:
        """(n,) probability that each vector's message expresses an emotion (1 without a
        gate)."""
        if self.gate_weights is None:
            return np.ones(len(vectors), dtype=np.float32)
        logits = vectors @ self.gate_weights + self.gate_bias
        gate: Vectors = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return gate

    def predict(self, vectors: Vectors) -> list[str]:
        """The most probable label of each vector."""
        return [self.labels[i] for i in self.probabilities(vectors).argmax(axis=1)]

    def anger(self, vectors: Vectors) -> Vectors:
        """(n,) anger as the brain sees it: emotional x P(anger label)."""
        column: Vectors = self.probabilities(vectors)[:, self.labels.index(self.anger_label)]
        gated: Vectors = column * self.emotional(vectors)
        return gated

    def read(self, vector: Vectors) -> Mood:
        """The mood of one message from its sentence vector."""
        row = vector.reshape(1, -1)
        probabilities = self.probabilities(row)[0]
        emotional = float(self.emotional(row)[0])
        scores = {label: float(p) for label, p in zip(self.labels, probabilities, strict=True)}
        sentiment = sum(p for label, p in scores.items() if label in self.positive) - sum(
            p for label, p in scores.items() if label in self.negative
        )
        return Mood(
            label=self.labels[int(probabilities.argmax())] if emotional >= 0.5 else "",
            anger=round(emotional * scores[self.anger_label], 4),
            sentiment=round(emotional * sentiment, 4),
            scores=tuple((label, round(p, 4)) for label, p in scores.items()),
            source=self.version,
            emotional=round(emotional, 4),
        )

    def with_thresholds(self, thresholds: MoodThresholds) -> MoodClassifier:
        return replace(self, thresholds=thresholds)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.gate_weights is None:
            np.savez(directory / WEIGHTS, weights=self.weights, bias=self.bias)
        else:
            np.savez(
                directory / WEIGHTS,
                weights=self.weights,
                bias=self.bias,
                gate_weights=self.gate_weights,
                gate_bias=np.array([self.gate_bias], dtype=np.float32),
            )
        metadata = {
            "labels": list(self.labels),
            "embedder": self.embedder,
            "dimension": self.dimension,
            "anger_label": self.anger_label,
            "positive": sorted(self.positive),
            "negative": sorted(self.negative),
            "thresholds": self.thresholds.to_json(),
            "info": dict(self.info),
        }
        (directory / METADATA).write_text(json.dumps(metadata, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, version: str = "base") -> MoodClassifier:
        """Read a saved classifier; ClassifierLoadError says what is wrong."""
        try:
            metadata = json.loads((directory / METADATA).read_text(encoding="utf-8"))
            with np.load(directory / WEIGHTS) as arrays:
                weights = arrays["weights"].astype(np.float32)
                bias = arrays["bias"].astype(np.float32)
                gate = arrays.get("gate_weights")
                gate_bias = float(arrays["gate_bias"][0]) if gate is not None else 0.0
            labels = tuple(str(label) for label in metadata["labels"])
            thresholds = metadata["thresholds"]
            classifier = cls(
                labels=labels,
                weights=weights,
                bias=bias,
                embedder=str(metadata["embedder"]),
                anger_label=str(metadata["anger_label"]),
                positive=frozenset(metadata.get("positive", ())),
                negative=frozenset(metadata.get("negative", ())),
                thresholds=MoodThresholds(
                    float(thresholds["strong"]),
                    float(thresholds["sustained"]),
                    str(thresholds.get("calibrated_from", "")),
                ),
                version=version,
                info=dict(metadata.get("info", {})),
                gate_weights=gate.astype(np.float32) if gate is not None else None,
                gate_bias=gate_bias,
            )
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ClassifierLoadError(
                f"cannot load the mood classifier in {directory}: {exc}"
            ) from exc
        if weights.ndim != 2 or weights.shape[0] != len(labels) or bias.shape != (len(labels),):
            raise ClassifierLoadError(f"{directory}: weights do not match the labels")
        if classifier.anger_label not in labels:
            raise ClassifierLoadError(
                f"{directory}: anger label {classifier.anger_label!r} is not one of {labels}"
            )
        return classifier


def default_anger_label(labels: Sequence[str]) -> str | None:
    """The first of the generic anger names the data uses, if any."""
    lowered = {label.lower(): label for label in labels}
    return next((lowered[name] for name in ANGER_LABELS if name in lowered), None)
