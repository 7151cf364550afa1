"""The mood reader the brain asks about every customer message.

It serves the classifier version `classifier:active` names (followed by an
`ActiveModelWatcher`, like the dialogue model; `base` = the classifier shipped with the
package) and reads a message from the sentence vector retrieval already computed for it
(and, for a classifier of the top_layer kind, the token states from that same pass).
When no classifier fits the embedding model in use (another `DESKMATE_EMBEDDING_MODEL`,
or a classifier that fails to load), it falls back to the word list in
`brain.policy.is_upset`, which only knows "angry" or "not".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from brain import compute
from brain.answering.registry import ModelVersion
from brain.mood.classifier import (
    DEFAULT_DIR,
    ClassifierLoadError,
    MoodClassifier,
    MoodThresholds,
    Vectors,
    same_embedder,
)
from brain.policy import is_upset
from brain.types import Mood

log = logging.getLogger(__name__)

REGEX = "regex"
# The word list says yes or no: a yes is as strong as anger gets; no "sustained" level.
REGEX_THRESHOLDS = MoodThresholds(strong=0.5, sustained=2.0, calibrated_from="word list")


def regex_mood(text: str, anger_label: str = "anger") -> Mood:
    """The fallback reading: angry (anger 1, sentiment -1) or nothing known (0, 0)."""
    upset = is_upset(text)
    return Mood(
        label=anger_label if upset else "",
        anger=1.0 if upset else 0.0,
        sentiment=-1.0 if upset else 0.0,
        source=REGEX,
    )


class MoodReader:
    """Reads messages with the served classifier, or the word list when there is none."""

    def __init__(
        self,
        classifier: MoodClassifier | None,
        embedder: str = "",
        dimension: int = 0,
        default_dir: Path | None = DEFAULT_DIR,
    ) -> None:
        self.embedder = embedder
        self.dimension = dimension
        self.default_dir = default_dir
        self.classifier = self._fitting(classifier)

    @classmethod
    def regex_only(cls) -> MoodReader:
        return cls(None, default_dir=None)

    @classmethod
    def default(cls, embedder: str, dimension: int) -> MoodReader:
        """The classifier shipped with the package, if it fits the embedder."""
        reader = cls(None, embedder, dimension)
        reader.classifier = reader._fitting(reader._load_default())
        return reader

    def _load_default(self) -> MoodClassifier | None:
        if self.default_dir is None:
            return None
        try:
            return MoodClassifier.load(self.default_dir)
        except ClassifierLoadError as exc:
            log.warning("%s; reading mood with the word list", exc)
            return None

    def _fitting(self, classifier: MoodClassifier | None) -> MoodClassifier | None:
        if classifier is None:
            return None
        if (self.embedder and not same_embedder(classifier.embedder, self.embedder)) or (
            self.dimension and classifier.dimension != self.dimension
        ):
            log.warning(
                "mood classifier %s expects embeddings of %s, not %s: reading mood with the "
                "word list",
                classifier.version,
                classifier.embedder,
                self.embedder,
            )
            return None
        return classifier

    @property
    def needs_vector(self) -> bool:
        """Whether reading a message needs its sentence vector."""
        return self.classifier is not None

    @property
    def needs_states(self) -> bool:
        """Whether reading a message needs its token states as well (the top_layer kind)."""
        return self.classifier is not None and self.classifier.needs_states

    @property
    def version(self) -> str:
        return self.classifier.version if self.classifier is not None else REGEX

    @property
    def thresholds(self) -> MoodThresholds:
        return self.classifier.thresholds if self.classifier is not None else REGEX_THRESHOLDS

    def read(self, text: str, vector: Vectors | None, states: Vectors | None = None) -> Mood:
        """The mood of `text`, from its normalised sentence vector when a classifier serves
        (and its unpadded token states, which a top_layer classifier needs)."""
        classifier = self.classifier  # one reference: a swap mid-read changes nothing
        if classifier is None or vector is None or (classifier.needs_states and states is None):
            return regex_mood(text)
        return classifier.read(np.asarray(vector, dtype=np.float32), states)

    async def use_version(self, version: ModelVersion | None) -> None:
        """Serve a registered classifier version (None = the one shipped with the package);
        a version that does not fit the embedder raises, so the watcher keeps the old one."""
        if version is None or version.adapter_dir is None:
            loaded = await compute.run_apart(self._load_default)
        else:
            loaded = await compute.run_apart(MoodClassifier.load, version.adapter_dir, version.name)
        fitting = self._fitting(loaded)
        if loaded is not None and fitting is None:
            raise ClassifierLoadError(
                f"classifier {loaded.version} does not fit the embedding model {self.embedder}"
            )
        self.classifier = fitting
