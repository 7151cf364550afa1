"""Mood heads over richer features from the retrieval pass: which reads emotions best.

The retrieval pass over a message computes the token states of every MiniLM layer, and
emotion is often read better from intermediate layers than from the final normalised
sentence vector. This pools layers 4-6 (mean over tokens, normalised per layer; here with
a separate transformers pass, as the product's embedder does not expose them), trains heads
on `emotion/train.jsonl` over the shipped feature (the normalised sentence vector) and
over layers 4-6 concatenated, scores them on `emotion/dev.jsonl` (anger F1, 4-label
macro-F1) and by 5-fold cross-validation on train (a second estimate, since the dev set
has 374 texts and was used to choose), and times what each would add per message (p50):
the head, plus for the layer features the pooling over states the retrieval pass already
has (the forward pass itself is shared, so it is not counted).

    python -m bench.mood_features [--data ../shared/data] [--cache /tmp/mood-features]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.embedder import Embedder, Vectors
from training.classifier import read_labelled, scores

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
LAYERS = (4, 5, 6)


def pool(states: Any, mask: Any) -> Any:
    """(batch, layers, hidden): each layer's token states averaged over the real tokens and
    L2-normalised (the work a mood reader would add to the retrieval pass)."""
    import torch

    weights = mask[:, None, :, None].to(states.dtype)
    means = (states * weights).sum(2) / weights.sum(2).clamp(min=1e-9)
    return torch.nn.functional.normalize(means, p=2, dim=2)


def pooled_layers(texts: list[str], batch_size: int = 64) -> Vectors:
    """(n, len(LAYERS) * hidden) pooled layer states of the bundled MiniLM."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from retrieval.embedder import resolve_model

    path = resolve_model("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=256,  # MiniLM's sentence-transformers limit
                return_tensors="pt",
            )
            hidden = encoder(**batch, output_hidden_states=True).hidden_states
            states = torch.stack([hidden[i] for i in LAYERS], dim=1)
            chunks.append(pool(states, batch["attention_mask"]).flatten(1).numpy())
    joined: Vectors = np.concatenate(chunks).astype(np.float32)
    return joined


def pooling_ms(tokens: int = 24, repeats: int = 300) -> float:
    """p50 of pooling one message's LAYERS states (`tokens` long) once they exist."""
    import torch

    states = torch.randn(1, len(LAYERS), tokens, 384)
    mask = torch.ones(1, tokens, dtype=torch.long)
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        pool(states, mask).flatten(1).numpy()
        timings.append(time.perf_counter() - began)
    return statistics.median(timings) * 1000


def features(embedder: Embedder, texts: list[str], cache: Path | None, name: str) -> Vectors:
    """(n, 384 * (1 + len(LAYERS))): the sentence vector, then the pooled layers."""
    path = cache / f"{name}.npy" if cache else None
    if path is not None and path.exists():
        cached: Vectors = np.load(path)
        return cached
    joined: Vectors = np.concatenate([embedder.encode(texts), pooled_layers(texts)], axis=1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, joined)
    return joined


def heads() -> dict[str, Callable[[], Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    return {
        "logistic C=4": lambda: LogisticRegression(C=4, max_iter=3000),
        "logistic C=1": lambda: LogisticRegression(C=1, max_iter=3000),
        "RBF SVM C=3": lambda: SVC(C=3, gamma="scale"),
    }


def run(data: Path, cache: Path | None) -> list[dict[str, Any]]:
    from sklearn.model_selection import StratifiedKFold

    train = read_labelled([data / "emotion" / "train.jsonl"])
    dev = read_labelled([data / "emotion" / "dev.jsonl"])
    embedder = Embedder()
    x_train = features(embedder, [e.text for e in train], cache, "train")
    x_dev = features(embedder, [e.text for e in dev], cache, "dev")
    y_train, y_dev = np.array([e.label for e in train]), [e.label for e in dev]
    dimension = embedder.dimension
    # The layers are weighted equally, and the whole has unit length, like the vector.
    inputs = {
        "sentence vector": slice(0, dimension),
        "layers 4-6": slice(dimension, None),
    }

    pooling = pooling_ms()

    rows = []
    for input_name, columns in inputs.items():
        scale = 1.0 if input_name == "sentence vector" else 1 / np.sqrt(len(LAYERS))
        a, b = x_train[:, columns] * scale, x_dev[:, columns] * scale
        for head_name, make in heads().items():
            model = make().fit(a, y_train)
            dev_scores = scores(y_dev, [str(p) for p in model.predict(b)])
            folds = []
            for fit_rows, test_rows in StratifiedKFold(5, shuffle=True, random_state=0).split(
                a, y_train
            ):
                fold = make().fit(a[fit_rows], y_train[fit_rows])
                predicted = [str(p) for p in fold.predict(a[test_rows])]
                folds.append(scores(list(y_train[test_rows]), predicted))
            timings = []
            for row in b[:100]:
                began = time.perf_counter()
                model.predict(row.reshape(1, -1))
                timings.append(time.perf_counter() - began)
            head_ms = statistics.median(timings) * 1000  # sklearn's predict, per call
            extra = pooling if input_name != "sentence vector" else 0.0
            shipped = input_name == "sentence vector" and head_name == "logistic C=4"
            rows.append(
                {
                    "name": f"{input_name} + {head_name}" + (" (shipped)" if shipped else ""),
                    "anger_f1": dev_scores["per_label"]["anger"]["f1"],
                    "macro_f1": dev_scores["macro_f1"],
                    "cv_anger_f1": statistics.mean(f["per_label"]["anger"]["f1"] for f in folds),
                    "cv_macro_f1": statistics.mean(f["macro_f1"] for f in folds),
                    "ms": round(head_ms + extra, 2),
                    "support_vectors": int(getattr(model, "n_support_", np.zeros(1)).sum()),
                }
            )
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| features + head | dev anger F1 | dev macro-F1 | 5-fold train anger F1 | 5-fold "
        "train macro-F1 | added ms/message (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['anger_f1']:.3f} | {r['macro_f1']:.3f} | "
            f"{r['cv_anger_f1']:.3f} | {r['cv_macro_f1']:.3f} | {r['ms']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    parser.add_argument("--cache", type=Path, default=None, help="keep features here")
    args = parser.parse_args(argv)
    print(table(run(args.data, args.cache)))


if __name__ == "__main__":
    main()
