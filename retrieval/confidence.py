"""How sure retrieval is that a question is covered by the FAQ, and the policy thresholds.

One top score is a poor judge of "is this in scope": a question about winter tents can
score as high against a repair entry as a paraphrase scores against its own entry. So the
confidence reads several signals of the hits (`FEATURES`): the best fused score, its margin
to the second entry, the dense and keyword scores of the best entry, whether the dense and
the keyword rankings agree on it, and how far it stands out of the best few. Calibration
(`retrieval.evaluation.calibrate`) fits a small logistic regression over them on the
deployment's labelled queries (in scope vs out of scope), and the thresholds are
probabilities of "in scope" chosen on cross-validated predictions. Without enough labelled
queries there is no model: the confidence is the best fused score and the thresholds are
conservative defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from retrieval.index import FaqHit

# The hits the features read: the policy gets the retriever's top_k (5 by default).
FEATURE_HITS = 5
FEATURES: Mapping[str, str] = {
    "score": "fused score of the best entry",
    "margin": "best score minus the second entry's",
    "dense": "dense (cosine) similarity of the best entry",
    "keyword": "keyword (BM25) score of the best entry",
    "dense_agrees": "1 if the best entry also has the best dense similarity",
    "keyword_agrees": "1 if the best entry also has the best keyword score (and one > 0)",
    "spread": f"best score minus the mean of the next {FEATURE_HITS - 1}",
}


def features(hits: Sequence[FaqHit]) -> npt.NDArray[np.float64]:
    """The FEATURES of a ranked hit list (best first); zeros for no hits."""
    top = list(hits[:FEATURE_HITS])
    if not top:
        return np.zeros(len(FEATURES))
    scores = [hit.score for hit in top]
    best = top[0]
    second = scores[1] if len(scores) > 1 else 0.0
    rest = scores[1:] or [0.0]
    return np.array(
        [
            best.score,
            best.score - second,
            best.dense,
            best.keyword,
            float(best.dense >= max(hit.dense for hit in top)),
            float(best.keyword > 0 and best.keyword >= max(hit.keyword for hit in top)),
            best.score - float(np.mean(rest)),
        ]
    )


@dataclass(frozen=True, slots=True)
class ConfidenceModel:
    """Logistic regression over standardised FEATURES: P(the question is in scope)."""

    weights: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def probability(self, hits: Sequence[FaqHit]) -> float:
        if not hits:
            return 0.0
        return float(self.probabilities(features(hits)[None, :])[0])

    def probabilities(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = (rows - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.weights) + self.intercept
        result: npt.NDArray[np.float64] = 1 / (1 + np.exp(-logits))
        return result

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConfidenceModel:
        if list(data["features"]) != list(FEATURES):
            raise ValueError(f"confidence model has features {data['features']}, not {FEATURES}")
        return cls(
            tuple(map(float, data["weights"])),
            float(data["intercept"]),
            tuple(map(float, data["mean"])),
            tuple(map(float, data["scale"])),
        )

    def explain(self) -> list[str]:
        """One line per feature, strongest first: its weight per standard deviation."""
        order = sorted(range(len(self.weights)), key=lambda i: -abs(self.weights[i]))
        names = list(FEATURES)
        return [
            f"{self.weights[i]:+.2f}  {names[i]:15} {FEATURES[names[i]]} "
            f"(mean {self.mean[i]:.3f}, sd {self.scale[i]:.3f})"
            for i in order
        ]


def fit_model(
    rows: npt.NDArray[np.float64], in_scope: npt.NDArray[np.bool_], strength: float = 1.0
) -> ConfidenceModel:
    """Fit the logistic regression (L2, `strength` = sklearn's C) on feature rows."""
    from sklearn.linear_model import LogisticRegression

    mean = rows.mean(axis=0)
    scale = rows.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    regression = LogisticRegression(C=strength, max_iter=1000)
    regression.fit((rows - mean) / scale, in_scope.astype(int))
    return ConfidenceModel(
        tuple(float(w) for w in regression.coef_[0]),
        float(regression.intercept_[0]),
        tuple(float(m) for m in mean),
        tuple(float(s) for s in scale),
    )


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Policy thresholds on the confidence (`confidence(hits)`).

    At or above `answer` the best entry is answered; at or above `clarify` the closest
    entries are offered; below it the conversation goes to a human. With a `model` the
    confidence is its probability that the question is in scope; without one it is the
    best fused score. `calibrated_from` names the labelled query file they were fitted on
    (None: defaults); `note` says how they were chosen, in words, for `deskmate eval`.
    """

    answer: float = 0.62
    clarify: float = 0.45
    calibrated_from: str | None = None
    model: ConfidenceModel | None = None
    note: str = ""
    figures: Mapping[str, float] = field(default_factory=dict)

    def confidence(self, hits: Sequence[FaqHit]) -> float:
        if not hits:
            return 0.0
        if self.model is None:
            return hits[0].score
        return self.model.probability(hits)

    @property
    def measure(self) -> str:
        return "P(in scope)" if self.model else "best fused score"

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "clarify": self.clarify,
            "calibrated_from": self.calibrated_from,
            "model": self.model.to_json() if self.model else None,
            "note": self.note,
            "figures": dict(self.figures),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Thresholds:
        model = data.get("model")
        return cls(
            answer=float(data["answer"]),
            clarify=float(data["clarify"]),
            calibrated_from=data.get("calibrated_from"),
            model=ConfidenceModel.from_json(model) if model else None,
            note=str(data.get("note", "")),
            figures={str(k): float(v) for k, v in dict(data.get("figures", {})).items()},
        )

    def describe(self) -> list[str]:
        """The thresholds and why, in lines for people."""
        where = (
            f"calibrated on {self.calibrated_from}"
            if self.calibrated_from
            else "defaults, uncalibrated"
        )
        lines = [
            f"Thresholds on {self.measure}: answer >= {self.answer:.3f}, "
            f"clarify >= {self.clarify:.3f} ({where})"
        ]
        if self.note:
            lines.append(f"  {self.note}")
        if self.model is not None:
            lines.append("  Confidence model (logistic regression, weight per sd):")
            lines += [f"    {line}" for line in self.model.explain()]
        return lines
