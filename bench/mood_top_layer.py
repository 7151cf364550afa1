"""Mood from MiniLM with only its top layer fine-tuned: on dev and by 5-fold CV on train.

The retrieval pass computes every layer's token states; a mood reader that fine-tunes only
the last layer could reuse the pass up to layer 5 and run one layer again (the rest of
a second encoder pass is what the issue rules out). This freezes layers 0-5, computes
their output once, fine-tunes a copy of the last layer + a linear head over the
normalised mean-pooled result (x20, the `bench.classifier --finetune` recipe otherwise),
and scores it on `emotion/dev.jsonl` and by the same 5-fold split of train as
`bench.mood_features`. Also times running that one layer on one message (one thread).

    python -m bench.mood_top_layer [--data ../shared/data] [--epochs 3] [--lr 3e-4]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.classifier import Labelled, read_labelled, scores

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
MAX_TOKENS = 64


def frozen_states(rows: list[Labelled], tokenizer: Any, encoder: Any) -> tuple[Any, Any]:
    """(states, masks): the input of the last layer for every text, padded to MAX_TOKENS."""
    import torch

    states, masks = [], []
    with torch.inference_mode():
        for start in range(0, len(rows), 64):
            batch = tokenizer(
                [r.text for r in rows[start : start + 64]],
                padding="max_length",
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = encoder(**batch, output_hidden_states=True).hidden_states
            states.append(hidden[-2].clone())
            masks.append(batch["attention_mask"].clone())
    return torch.cat(states), torch.cat(masks)


def fine_tune(
    encoder: Any,
    labels: list[str],
    train: tuple[Any, Any, list[str]],
    test: tuple[Any, Any, list[str]],
    epochs: int,
    lr: float,
) -> dict[str, Any]:
    """Scores on `test` of the last layer + head fine-tuned on `train` (states, masks, gold)."""
    import torch

    torch.manual_seed(0)
    layer = copy.deepcopy(encoder.encoder.layer[-1])
    head = torch.nn.Linear(encoder.config.hidden_size, len(labels))

    def logits(states: Any, mask: Any) -> Any:
        blocked = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        output = layer(states, attention_mask=blocked)
        hidden = output[0] if isinstance(output, tuple) else output
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        return head(torch.nn.functional.normalize(pooled, dim=-1) * 20.0)

    states, masks, gold = train
    target = torch.tensor([labels.index(g) for g in gold])
    batch_size = 32
    steps = epochs * ((len(gold) + batch_size - 1) // batch_size)
    optimizer = torch.optim.AdamW(
        [{"params": layer.parameters(), "lr": lr}, {"params": head.parameters(), "lr": 2e-3}],
        weight_decay=0.01,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, (steps - s) / steps)
    )
    generator = torch.Generator().manual_seed(0)
    layer.train()
    for _ in range(epochs):
        order = torch.randperm(len(gold), generator=generator)
        for rows in order.split(batch_size):  # type: ignore[no-untyped-call]
            predicted = logits(states[rows], masks[rows])
            loss = torch.nn.functional.cross_entropy(predicted, target[rows])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    layer.eval()
    test_states, test_masks, test_gold = test
    with torch.no_grad():
        predicted = [
            labels[int(i)]
            for start in range(0, len(test_gold), 128)
            for i in logits(
                test_states[start : start + 128], test_masks[start : start + 128]
            ).argmax(1)
        ]
        timings = []
        torch.set_num_threads(1)
        for tokens in range(8, 40):  # one message's states, unpadded
            one = torch.randn(1, tokens, encoder.config.hidden_size)
            began = time.perf_counter()
            logits(one, torch.ones(1, tokens, dtype=torch.long))
            timings.append(time.perf_counter() - began)
    return {**scores(test_gold, predicted), "ms": statistics.median(timings) * 1000}


def run(data: Path, epochs: int, lr: float) -> dict[str, Any]:
    import torch
    from sklearn.model_selection import StratifiedKFold
    from transformers import AutoModel, AutoTokenizer

    from retrieval.embedder import resolve_model

    threads = torch.get_num_threads()
    path = resolve_model("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval()
    train = read_labelled([data / "emotion" / "train.jsonl"])
    dev = read_labelled([data / "emotion" / "dev.jsonl"])
    labels = sorted({r.label for r in train})
    states, masks = frozen_states(train, tokenizer, encoder)
    dev_states, dev_masks = frozen_states(dev, tokenizer, encoder)
    gold = [r.label for r in train]
    on_dev = fine_tune(
        encoder,
        labels,
        (states, masks, gold),
        (dev_states, dev_masks, [r.label for r in dev]),
        epochs,
        lr,
    )
    folds = []
    split = StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(gold)), gold)
    for fit_rows, test_rows in split:
        torch.set_num_threads(threads)
        fit = torch.as_tensor(fit_rows)
        test = torch.as_tensor(test_rows)
        folds.append(
            fine_tune(
                encoder,
                labels,
                (states[fit], masks[fit], [gold[i] for i in fit_rows]),
                (states[test], masks[test], [gold[i] for i in test_rows]),
                epochs,
                lr,
            )
        )
        print(f"fold {len(folds)}: macro-F1 {folds[-1]['macro_f1']}", flush=True)
    return {
        "dev_anger_f1": on_dev["per_label"]["anger"]["f1"],
        "dev_macro_f1": on_dev["macro_f1"],
        "cv_anger_f1": round(statistics.mean(f["per_label"]["anger"]["f1"] for f in folds), 4),
        "cv_macro_f1": round(statistics.mean(f["macro_f1"] for f in folds), 4),
        "layer_ms_p50": round(on_dev["ms"], 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-4, help="the top layer's learning rate")
    args = parser.parse_args(argv)
    print(run(args.data, args.epochs, args.lr))


if __name__ == "__main__":
    main()
