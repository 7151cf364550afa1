"""Retraining benchmark: fine-tune the embedded default model on StackFAQ transcripts.

Each dev query becomes a conversation (the query as the customer's question, its reference
answer as the agent's reply). `deskmate train` holds out a share of them, fine-tunes a LoRA
adapter on the rest, and scores base model vs fine-tuned model on the held-out part; this
bench adds the quote backend (best FAQ entry verbatim, cited [1]) on the same questions
and prints one table.

    .venv/bin/python -m bench.training [--conversations 340 --heldout 40 --epochs 1]

Needs the stackfaq set (../shared/data/stackfaq or --data) and the embedded
SmolLM2-135M-Instruct (converted once into DESKMATE_DATA_DIR/models).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from brain.settings import Settings
from retrieval.embedder import Embedder
from retrieval.faq import load_faq
from retrieval.index import rebuild
from training.report import summary
from training.scoring import score_answers
from training.train import TrainConfig, main


def _find_data() -> Path:
    """The nearest shared/data/stackfaq above the repository (../shared in a checkout)."""
    for parent in Path(__file__).resolve().parents[1:]:
        candidate = parent / "shared" / "data" / "stackfaq"
        if candidate.is_dir():
            return candidate
    return Path("../shared/data/stackfaq")


DEFAULT_DATA = _find_data()


def make_conversations(queries_path: Path, count: int, seed: int) -> list[dict[str, object]]:
    queries = [json.loads(line) for line in queries_path.read_text().splitlines() if line.strip()]
    queries = [q for q in queries if q.get("relevant") and q.get("answer")]
    random.Random(seed).shuffle(queries)
    return [
        {
            "messages": [
                {"role": "user", "content": q["query"], "time": 1.0},
                {"role": "agent", "content": q["answer"], "time": 2.0},
            ],
            "meta": {"id": f"stackfaq:{n}", "channel": "console", "source": "bench"},
        }
        for n, q in enumerate(queries[:count])
    ]


def run(args: argparse.Namespace) -> int:
    settings = Settings.load()
    work = Path(tempfile.mkdtemp(prefix="bench-training-", dir=settings.data_dir))
    entries = load_faq([args.data / "faqs.jsonl"])
    answers = {entry.id: entry.answer for entry in entries}
    rebuild(work / "index", entries, Embedder(settings.embedding_model))
    conversations = make_conversations(args.data / "queries-dev.jsonl", args.conversations, 0)
    path = work / "conversations.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations))

    cfg = TrainConfig(
        conversations=path,
        epochs=args.epochs,
        heldout_fraction=args.heldout / len(conversations),
        max_heldout=args.heldout,
        max_length=args.max_length,
        top_k=args.top_k,
        passage_chars=args.passage_chars,
        eval_passage_chars=args.eval_passage_chars,
        lora_layers=args.lora_layers,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        eval_batch_size=args.eval_batch_size,
        eval_int8=args.eval_int8,
        eval_loss=False,
        compare_with="base",
        index_dir=work / "index",
        output_dir=work / "run",
        register=False,
        save_steps=10_000,
    )
    started = time.perf_counter()
    result = main(cfg, settings)
    total = time.perf_counter() - started
    report = result.report
    print(summary(report), file=sys.stderr)

    held = [json.loads(line) for line in (work / "run" / "heldout.jsonl").read_text().splitlines()]
    quote = score_answers(
        [f"{answers[h['passage_ids'][0]]} [1]" for h in held],
        [h["reference"] for h in held],
        [h["passage_ids"] for h in held],
        [h["source_id"] for h in held],
    ).to_json()
    evaluation = report["evaluation"]
    rows = [
        ("quote backend", quote),
        ("base SmolLM2-135M", evaluation["serving"]["scores"]),
        ("fine-tuned (LoRA)", evaluation["new"]["scores"]),
    ]
    training = report["training"]
    print(
        f"\nStackFAQ retraining: {report['data']['train_examples']} training conversations, "
        f"{len(held)} held out"
    )
    print(f"{'answers by':22} {'token-F1':>9} {'ROUGE-L':>9} {'citation':>9} {'handoff':>9}")
    for name, scores in rows:
        print(
            f"{name:22} {scores['token_f1']:9.3f} {scores['rouge_l']:9.3f} "
            f"{scores['citation_accuracy']:9.3f} {scores['handoff_rate']:9.3f}"
        )
    print(
        f"\ntraining: {training['seconds']:.0f} s for {cfg.epochs:g} epoch(s), "
        f"{training['tokens']} tokens, {training['tokens_per_second']:.0f} tokens/s "
        f"({training['device']}); whole run with evaluation {total:.0f} s"
    )
    print(f"report: {work / 'run' / 'report.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="stackfaq folder")
    parser.add_argument("--conversations", type=int, default=340, help="train + held out")
    parser.add_argument("--heldout", type=int, default=40, help="held-out conversations")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--passage-chars", type=int, default=360)
    parser.add_argument("--eval-passage-chars", type=int, default=800)
    parser.add_argument("--lora-layers", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=1, help="1: no padding on CPU")
    parser.add_argument(
        "--eval-int8",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="evaluate with int8 weights (faster on CPU, lower answer quality)",
    )
    return parser


if __name__ == "__main__":
    sys.exit(run(build_parser().parse_args()))
