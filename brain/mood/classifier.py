"""A mood classifier: a linear (logistic regression) head over sentence embeddings.

The head reads the same normalised MiniLM vector retrieval computes for a question, so
classifying a message costs one small matrix product, not a second encoder pass. Saved
as a directory:

    classifier.json   labels, which embedder it expects, the anger label, the labels that
                      count as positive / negative for sentiment, calibrated thresholds
    head.npz          weights (labels x dimension) and bias (labels); the neutral gate's
                      gate_weights (dimension) and gate_bias, when trained with one

A second kind (`"kind": "top_layer"` in classifier.json; absent = the head above) reads
the token states that enter MiniLM's last transformer layer, which the retrieval pass
computes anyway (`retrieval.embedder.Encoding`): it runs its own fine-tuned copy of that
layer (top_layer.npz, float16, with its BERT config in classifier.json), mean-pools and
normalises the result, and applies the head to it (x `scale`). The neutral gate still
reads the sentence vector. Measured in bench/mood_top_layer.py and bench/classifier.py.

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
TOP_LAYER_WEIGHTS = "top_layer.npz"
VECTOR_KIND = "vector"  # the head over the sentence vector (no "kind" in classifier.json)
TOP_LAYER_KIND = "top_layer"  # a fine-tuned last layer + head over the token states
DEFAULT_DIR = Path(__file__).resolve().parent / "default"  # shipped with the package

# Generic emotion vocabulary: which of a data set's labels escalate, and which count as
# positive or negative for sentiment when training is not told otherwise.
ANGER_LABELS = ("anger", "angry", "frustration", "annoyance", "negative")
POSITIVE_LABELS = frozenset({"joy", "optimism", "love", "happiness", "gratitude", "positive"})
NEGATIVE_LABELS = frozenset(
    {"anger", "angry", "sadness", "fear", "disgust", "frustration", "annoyance", "negative"}
)

Vectors = npt.NDArray[np.float32]
# Per message: the (tokens, hidden) states entering the encoder's last layer, padding dropped.
TokenStates = Sequence[Vectors]


def unpadded(states: Sequence[Vectors], masks: Sequence[npt.NDArray[np.int64]]) -> list[Vectors]:
    """Each message's states at its tokens only (an `Encoding`'s states and masks)."""
    return [state[np.asarray(mask, dtype=bool)] for state, mask in zip(states, masks, strict=True)]


@dataclass(frozen=True)
class TopLayer:
    """A fine-tuned copy of the encoder's last (BERT) layer, run on CPU with torch."""

    config: Mapping[str, Any]  # the BertConfig fields the layer needs
    weights: Mapping[str, npt.NDArray[Any]]  # its state dict
    scale: float = 20.0  # the pooled vector is normalised, then multiplied by this

    def module(self) -> Any:
        """The layer as a torch module (built on each call; callers keep it)."""
        import torch
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertLayer

        config = BertConfig(**self.config)
        config._attn_implementation = "eager"
        layer = BertLayer(config)  # type: ignore[no-untyped-call]
        layer.load_state_dict(
            {
                name: torch.from_numpy(np.asarray(w, dtype=np.float32))
                for name, w in self.weights.items()
            }
        )
        return layer.eval()

    @staticmethod
    def pooled(layer: Any, states: Any, mask: Any, scale: float) -> Any:
        """(n, hidden) normalised mean of the layer's output over the tokens, x scale;
        `states` (n, tokens, hidden) and `mask` (n, tokens) torch tensors."""
        import torch

        blocked = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        output = layer(states, attention_mask=blocked)
        hidden = output[0] if isinstance(output, tuple) else output
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1) * scale

    def features(self, layer: Any, states: TokenStates, batch_size: int = 64) -> Vectors:
        """(n, hidden) features of each message's unpadded states."""
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(states), batch_size):
                batch = [
                    torch.from_numpy(np.asarray(s, dtype=np.float32))
                    for s in states[start : start + batch_size]
                ]
                padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
                mask = torch.nn.utils.rnn.pad_sequence(
                    [torch.ones(len(s), dtype=torch.long) for s in batch], batch_first=True
                )
                rows.append(self.pooled(layer, padded, mask, self.scale).numpy())
        if not rows:
            return np.zeros((0, int(self.config["hidden_size"])), dtype=np.float32)
        return np.concatenate(rows).astype(np.float32)


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
    top_layer: TopLayer | None = None  # the top_layer kind: the head reads its features
    _layer: list[Any] = field(default_factory=list, repr=False, compare=False)  # built once

    @property
    def kind(self) -> str:
        return VECTOR_KIND if self.top_layer is None else TOP_LAYER_KIND

    @property
    def needs_states(self) -> bool:
        """Whether reading a message needs its token states (see `TokenStates`)."""
        return self.top_layer is not None

    @property
    def dimension(self) -> int:
        """The sentence vectors' dimension (the gate's; the vector kind's head's too)."""
        if self.gate_weights is not None:
            return int(self.gate_weights.shape[0])
        return int(self.weights.shape[1])

    def layer_features(self, states: TokenStates) -> Vectors:
        """The top layer's (n, hidden) features of each message's token states."""
        if self.top_layer is None:
            raise ValueError("a vector classifier reads sentence vectors, not token states")
        if not self._layer:
            self._layer.append(self.top_layer.module())
        return self.top_layer.features(self._layer[0], states)

    def probabilities(self, vectors: Vectors, states: TokenStates | None = None) -> Vectors:
        """(n, labels) probabilities for (n, dimension) vectors (the vector kind) or for
        n messages' token states (the top_layer kind)."""
        if self.top_layer is not None:
            if states is None:
                raise ValueError("this classifier reads token states: pass `states`")
            vectors = self.layer_features(states)
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

    def predict(self, vectors: Vectors, states: TokenStates | None = None) -> list[str]:
        """The most probable label of each message."""
        return [self.labels[i] for i in self.probabilities(vectors, states).argmax(axis=1)]

    def anger(self, vectors: Vectors, states: TokenStates | None = None) -> Vectors:
        """(n,) anger as the brain sees it: emotional x P(anger label)."""
        probabilities = self.probabilities(vectors, states)
        column: Vectors = probabilities[:, self.labels.index(self.anger_label)]
        gated: Vectors = column * self.emotional(vectors)
        return gated

    def read(self, vector: Vectors, states: Vectors | None = None) -> Mood:
        """The mood of one message from its sentence vector (and, for the top_layer kind,
        its unpadded token states)."""
        row = vector.reshape(1, -1)
        probabilities = self.probabilities(row, None if states is None else [states])[0]
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
        metadata: dict[str, Any] = {
            "labels": list(self.labels),
            "embedder": self.embedder,
            "dimension": self.dimension,
            "anger_label": self.anger_label,
            "positive": sorted(self.positive),
            "negative": sorted(self.negative),
            "thresholds": self.thresholds.to_json(),
            "info": dict(self.info),
        }
        if self.top_layer is not None:
            metadata["kind"] = TOP_LAYER_KIND
            metadata["top_layer"] = {
                "config": dict(self.top_layer.config),
                "scale": self.top_layer.scale,
            }
            halves: dict[str, Any] = {
                name: np.asarray(w, dtype=np.float16) for name, w in self.top_layer.weights.items()
            }
            np.savez_compressed(directory / TOP_LAYER_WEIGHTS, **halves)
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
            kind = metadata.get("kind", VECTOR_KIND)
            top_layer = None
            if kind == TOP_LAYER_KIND:
                with np.load(directory / TOP_LAYER_WEIGHTS) as arrays:
                    layer_weights = {name: arrays[name] for name in arrays.files}
                top_layer = TopLayer(
                    dict(metadata["top_layer"]["config"]),
                    layer_weights,
                    float(metadata["top_layer"].get("scale", 20.0)),
                )
            elif kind != VECTOR_KIND:
                raise ValueError(f"unknown classifier kind {kind!r}")
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
                top_layer=top_layer,
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
