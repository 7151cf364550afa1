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

With enough labelled queries the model also reads how a question compares with them
(`NEIGHBOUR_FEATURES`): the labelled questions are kept with the thresholds
(`LabelledExamples`, embedded by the retrieval model) and each search notes the
similarity of the nearest out-of-scope and in-scope one and the share of out-of-scope
questions among the nearest few (`FaqHit.neighbours`). Out-of-scope traffic repeats
itself (other products, other services, small talk) in ways no score against the FAQ
shows: on BANKING77-OOS dev this took cross-validated out-of-scope F1 from 0.75 to 0.90.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from retrieval.embedder import Embedder
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


# How many of the nearest labelled questions `out_share` counts.
NEIGHBOURS = 10
NEIGHBOUR_FEATURES: Mapping[str, str] = {
    "nearest_out": "similarity of the nearest labelled out-of-scope question",
    "nearest_in": "similarity of the nearest labelled in-scope question",
    "out_share": f"share of out-of-scope among the {NEIGHBOURS} nearest labelled questions",
}
DESCRIPTIONS: Mapping[str, str] = {**FEATURES, **NEIGHBOUR_FEATURES}
# Labelled questions are compared in blocks of this many rows (bounded memory).
_BLOCK = 1024


def neighbour_features(
    vectors: npt.NDArray[np.float32],
    references: npt.NDArray[np.float32],
    out_of_scope: npt.NDArray[np.bool_],
    exclude: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.float64]:
    """The NEIGHBOUR_FEATURES of each row of `vectors` (normalised, one question each)
    against labelled `references` (normalised; `out_of_scope` flags them). `exclude[i]`
    is a reference row that question i must not see (itself, among the references), or -1.
    """
    count = len(references) - (exclude is not None)
    nearest = min(NEIGHBOURS, count)
    result = np.zeros((len(vectors), len(NEIGHBOUR_FEATURES)))
    if nearest < 1 or not len(vectors):
        return result
    for start in range(0, len(vectors), _BLOCK):
        sims = vectors[start : start + _BLOCK] @ references.T
        if exclude is not None:
            own = exclude[start : start + _BLOCK]
            rows = np.flatnonzero(own >= 0)
            sims[rows, own[rows]] = -np.inf
        outside = np.where(out_of_scope[None, :], sims, -np.inf).max(axis=1)
        inside = np.where(out_of_scope[None, :], -np.inf, sims).max(axis=1)
        top = np.argpartition(-sims, nearest - 1, axis=1)[:, :nearest]
        block = result[start : start + _BLOCK]
        block[:, 0] = np.where(np.isfinite(outside), outside, -1.0)
        block[:, 1] = np.where(np.isfinite(inside), inside, -1.0)
        block[:, 2] = out_of_scope[top].mean(axis=1)
    return result


@dataclass(frozen=True, slots=True, eq=False)
class LabelledExamples:
    """The labelled questions a confidence model was calibrated on, as the retrieval
    model `model` embeds them: what the NEIGHBOUR_FEATURES of a new question are read
    against. `texts` are kept so that another retrieval model can embed them again."""

    texts: tuple[str, ...]
    out_of_scope: npt.NDArray[np.bool_]
    vectors: npt.NDArray[np.float32]
    model: str

    def neighbours(self, vector: npt.NDArray[np.float32]) -> tuple[float, ...]:
        """The NEIGHBOUR_FEATURES of one question's (normalised) vector."""
        row = neighbour_features(vector.reshape(1, -1), self.vectors, self.out_of_scope)
        return tuple(float(value) for value in row[0])

    def embedded_by(self, embedder: Embedder) -> LabelledExamples:
        """The same questions as `embedder` embeds them (itself if it already did)."""
        if embedder.name == self.model:
            return self
        vectors = np.asarray(embedder.encode(list(self.texts)), dtype=np.float32)
        return replace(self, vectors=vectors, model=embedder.name)

    def to_json(self) -> dict[str, Any]:
        """Texts, flags and model; the vectors are stored beside (`FaqIndex.save`)."""
        return {
            "model": self.model,
            "texts": list(self.texts),
            "out_of_scope": [bool(flag) for flag in self.out_of_scope],
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], vectors: npt.NDArray[np.float32]
    ) -> LabelledExamples:
        texts = tuple(str(text) for text in data["texts"])
        flags = np.array([bool(flag) for flag in data["out_of_scope"]], dtype=bool)
        if not (len(texts) == len(flags) == len(vectors)):
            raise ValueError(
                f"{len(texts)} labelled questions, {len(flags)} flags, {len(vectors)} vectors"
            )
        return cls(texts, flags, np.asarray(vectors, dtype=np.float32), str(data["model"]))


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
    """Logistic regression over standardised FEATURES (and NEIGHBOUR_FEATURES when
    `names` has them): P(the question is in scope)."""

    weights: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    names: tuple[str, ...] = tuple(FEATURES)

    @property
    def reads_neighbours(self) -> bool:
        return len(self.names) > len(FEATURES)

    def probability(
        self, hits: Sequence[FaqHit], neighbours: Sequence[float] | None = None
    ) -> float:
        """P(in scope) of a question with these hits. A model that reads neighbours takes
        them from `neighbours`, else from the hits; where neither has them (the labelled
        questions were embedded by another model) they count as average."""
        if not hits:
            return 0.0
        row = features(hits)
        if self.reads_neighbours:
            known = neighbours if neighbours is not None else hits[0].neighbours
            extra = self.mean[len(FEATURES) :] if known is None else known
            row = np.concatenate([row, np.asarray(extra, dtype=np.float64)])
        return float(self.probabilities(row[None, :])[0])

    def probabilities(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = (rows - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.weights) + self.intercept
        result: npt.NDArray[np.float64] = 1 / (1 + np.exp(-logits))
        return result

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.names),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "mean": list(self.mean),
            "scale": list(self.scale),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConfidenceModel:
        names = list(data["features"])
        known = (list(FEATURES), [*FEATURES, *NEIGHBOUR_FEATURES])
        if names not in known:
            raise ValueError(f"confidence model has features {names}, not one of {known}")
        return cls(
            tuple(map(float, data["weights"])),
            float(data["intercept"]),
            tuple(map(float, data["mean"])),
            tuple(map(float, data["scale"])),
            tuple(names),
        )

    def explain(self) -> list[str]:
        """One line per feature, strongest first: its weight per standard deviation."""
        order = sorted(range(len(self.weights)), key=lambda i: -abs(self.weights[i]))
        names = self.names
        return [
            f"{self.weights[i]:+.2f}  {names[i]:15} {DESCRIPTIONS[names[i]]} "
            f"(mean {self.mean[i]:.3f}, sd {self.scale[i]:.3f})"
            for i in order
        ]


def fit_model(
    rows: npt.NDArray[np.float64], in_scope: npt.NDArray[np.bool_], strength: float = 1.0
) -> ConfidenceModel:
    """Fit the logistic regression (L2, `strength` = sklearn's C) on feature rows (FEATURES,
    then NEIGHBOUR_FEATURES if the rows are that wide)."""
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
        tuple(DESCRIPTIONS)[: rows.shape[1]],
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
    examples: LabelledExamples | None = None

    def confidence(
        self, hits: Sequence[FaqHit], neighbours: Sequence[float] | None = None
    ) -> float:
        """The policy's confidence in these hits; `neighbours` (NEIGHBOUR_FEATURES) stand in
        for the ones the search noted on the hits (evaluation judges a question against
        other folds' labelled questions, not the stored ones)."""
        if not hits:
            return 0.0
        if self.model is None:
            return hits[0].score
        return self.model.probability(hits, neighbours)

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
            "examples": self.examples.to_json() if self.examples else None,
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], example_vectors: npt.NDArray[np.float32] | None = None
    ) -> Thresholds:
        """Thresholds as `to_json` wrote them; the labelled examples' vectors come from
        beside (`FaqIndex.save`), and without them the examples are left out."""
        model = data.get("model")
        examples = data.get("examples")
        return cls(
            answer=float(data["answer"]),
            clarify=float(data["clarify"]),
            calibrated_from=data.get("calibrated_from"),
            model=ConfidenceModel.from_json(model) if model else None,
            note=str(data.get("note", "")),
            figures={str(k): float(v) for k, v in dict(data.get("figures", {})).items()},
            examples=LabelledExamples.from_json(examples, example_vectors)
            if examples and example_vectors is not None
            else None,
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
        if self.examples is not None and self.model is not None and self.model.reads_neighbours:
            outside = int(self.examples.out_of_scope.sum())
            lines.append(
                f"  Neighbours read among {len(self.examples.texts)} labelled questions "
                f"({outside} out of scope), embedded by {self.examples.model}."
            )
        return lines
