"""Mood classifier benchmark: both trained kinds beside the word list on the emotion dev set.

Trains both recipes on `emotion/train.jsonl` (a neutral gate from FAQ questions each): the
vector head (MiniLM sentence vectors -> logistic regression, before issue 18) and the
shipped top_layer kind (MiniLM's last layer + a head fine-tuned on the token states
entering it), measures anger F1 and 4-label macro-F1 on `emotion/dev.jsonl` for them and
for the regex fallback, the training time, and the time reading mood adds per message
(p50, torch on one thread) when the retrieval pass is reused, beside what a second encoder
pass would cost. For the top_layer kind the added time is running its layer + head plus
what keeping the states from the pass costs (`encode_with_states` over `encode`).
`--finetune N` also fine-tunes MiniLM end to end for N epochs (mean pooling + linear head,
all weights) and reports the same figures for it.

    python -m bench.classifier [--data ../shared/data] [--finetune 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from brain.mood.classifier import unpadded
from brain.mood.reader import MoodReader
from retrieval.embedder import Embedder
from training.classifier import ClassifierConfig, evaluate, read_labelled, scores, train

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SAMPLE_FAQ = Path(__file__).resolve().parent.parent / "bots" / "sample" / "faq.jsonl"


def p50_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def row(name: str, result: dict[str, Any], anger_label: str, **extra: Any) -> dict[str, Any]:
    anger = result["per_label"].get(anger_label, {}).get("f1", 0.0)
    return {"name": name, "anger_f1": anger, "macro_f1": result["macro_f1"], **extra}


def finetune(data: Path, epochs: int) -> dict[str, Any]:
    """Fine-tune MiniLM end to end (mean pooling, linear head) and score it on dev."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from retrieval.embedder import resolve_model

    torch.manual_seed(0)
    path = resolve_model("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    train_rows = read_labelled([data / "emotion" / "train.jsonl"])
    dev_rows = read_labelled([data / "emotion" / "dev.jsonl"])
    labels = sorted({r.label for r in train_rows})
    head = torch.nn.Linear(encoder.config.hidden_size, len(labels))

    def embed(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1) * 20.0  # cosine logits scale

    batch_size = 32
    steps = epochs * ((len(train_rows) + batch_size - 1) // batch_size)
    optimizer = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": 5e-5}, {"params": head.parameters(), "lr": 2e-3}],
        weight_decay=0.01,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, (steps - s) / steps)
    )
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(train_rows), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            rows = [train_rows[i] for i in order[start : start + batch_size]]
            logits = head(embed([r.text for r in rows]))
            target = torch.tensor([labels.index(r.label) for r in rows])
            torch.nn.functional.cross_entropy(logits, target).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    seconds = time.perf_counter() - started
    encoder.eval()
    predicted: list[str] = []
    timings: list[float] = []
    with torch.no_grad():
        for r in dev_rows:
            began = time.perf_counter()
            predicted.append(labels[int(head(embed([r.text])).argmax())])
            timings.append(time.perf_counter() - began)
    result = scores([r.label for r in dev_rows], predicted)
    return {"result": result, "train_s": round(seconds, 1), "ms": p50_ms(timings)}


def run(data: Path, finetune_epochs: int = 0) -> list[dict[str, Any]]:
    import torch

    threads = torch.get_num_threads()
    emotion = data / "emotion"
    neutral = [
        path
        for path in (
            SAMPLE_FAQ,
            data / "banking77-oos" / "queries-dev.jsonl",
            data / "stackfaq" / "queries-dev.jsonl",
        )
        if path.exists()
    ]
    embedder = Embedder()
    trained = {}
    for top_layer in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            from brain.answering.registry import ModelRegistry

            config = ClassifierConfig(
                [emotion / "train.jsonl"],
                dev=emotion / "dev.jsonl",
                neutral=neutral,
                register=False,
                show_progress=False,
                top_layer=top_layer,
            )
            trained[top_layer] = train(config, embedder, ModelRegistry(Path(folder)))
    dev = read_labelled([emotion / "dev.jsonl"])
    regex_result = evaluate(emotion / "dev.jsonl", None, None)
    regex_reader = MoodReader.regex_only()
    regex_times = []
    for r in dev:
        began = time.perf_counter()
        regex_reader.read(r.text, None)
        regex_times.append(time.perf_counter() - began)
    anger = trained[True].classifier.anger_label
    rows = [row("regex (word list)", regex_result, anger, train_s=0.0, ms=p50_ms(regex_times))]

    torch.set_num_threads(1)
    encoder: list[float] = []
    keeping_states: list[float] = []
    for r in dev:
        began = time.perf_counter()
        embedder.encode_query(r.text)
        encoder.append(time.perf_counter() - began)
        began = time.perf_counter()
        embedder.encode_with_states([r.text])
        keeping_states.append(time.perf_counter() - began)
    encoding = embedder.encode_with_states([r.text for r in dev])  # as retrieval keeps them
    states = unpadded(encoding.states, encoding.masks)
    names = {
        False: "MiniLM frozen + logistic head (before)",
        True: "MiniLM last layer fine-tuned + head on the pass's states (shipped)",
    }
    for top_layer, result in trained.items():
        classifier = result.classifier
        reader = MoodReader(classifier, embedder.name, embedder.dimension)
        added: list[float] = []
        for i, r in enumerate(dev):
            began = time.perf_counter()
            reader.read(r.text, encoding.vectors[i], states[i] if top_layer else None)
            added.append(time.perf_counter() - began)
        report = result.report
        ms = p50_ms(added)
        extra = ""
        if top_layer:
            states_ms = round(p50_ms(keeping_states) - p50_ms(encoder), 3)
            extra = f"; layer + head {ms} ms + keeping the states {states_ms} ms; "
            ms = round(ms + max(states_ms, 0.0), 3)
        rows.append(
            row(
                names[top_layer],
                evaluate(emotion / "dev.jsonl", classifier, embedder),
                anger,
                train_s=report["train_seconds"],
                ms=ms,
                note=f"second encoder pass would add {p50_ms(encoder)} ms{extra or '; '}"
                f"thresholds strong {report['thresholds']['strong']}, sustained "
                f"{report['thresholds']['sustained']}; held-out neutral questions at or above "
                f"strong: {report['neutral_flagged_strong']}",
            )
        )
    torch.set_num_threads(threads)
    if finetune_epochs:
        tuned = finetune(data, finetune_epochs)
        rows.append(
            row(
                f"MiniLM fine-tuned end to end, {finetune_epochs} epochs",
                tuned["result"],
                anger,
                train_s=tuned["train_s"],
                ms=tuned["ms"],
                note="a second encoder pass per message (the retrieval vector is not reused)",
            )
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| classifier | anger F1 | macro-F1 | training s | added ms/message (p50) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['anger_f1']:.3f} | {r['macro_f1']:.3f} | {r['train_s']} | "
            f"{r['ms']} |"
        )
    notes = [f"- {r['name']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join([*lines, "", *notes])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    parser.add_argument(
        "--finetune", type=int, default=0, metavar="EPOCHS", help="also fine-tune MiniLM"
    )
    args = parser.parse_args(argv)
    print(table(run(args.data, args.finetune)))


if __name__ == "__main__":
    main()
